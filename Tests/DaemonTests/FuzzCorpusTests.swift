import Foundation
import FuzzSupport
import Testing

/// Replays every input the fuzzers have kept (scripts/fuzz.sh grows Fuzz/corpus): none may crash.
@Suite struct FuzzCorpusTests {
    static func corpus(_ target: String) -> [URL] {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Fuzz/corpus/\(target)").standardized
        return ((try? FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)) ?? []).sorted { $0.path < $1.path }
    }

    @Test func theDecoderCorpusReplays() throws {
        let files = Self.corpus("decoder")
        #expect(files.count >= 50)
        for file in files { fuzzDecode(Array(try Data(contentsOf: file))) }
    }

    @Test func theConfigurationCorpusReplays() throws {
        let files = Self.corpus("configuration")
        #expect(files.count >= 50)
        #expect(files.contains { $0.lastPathComponent.hasPrefix("regression-") })
        // the regression input still reaches the check it once got past
        let regression = try Data(contentsOf: files.first { $0.lastPathComponent == "regression-cartpole-infinite-max-force" }!)
        #expect(fuzzConfigurationError(Array(regression))?.key == "task.max_force")
        for file in files { fuzzConfigure(Array(try Data(contentsOf: file))) }
    }

    @Test func theControlCorpusReplays() throws {
        let files = Self.corpus("control")
        #expect(files.count >= 5)
        for file in files { fuzzControlRequest(Array(try Data(contentsOf: file))) }
    }

    @Test func theNetworkCorpusReplays() throws {
        let files = Self.corpus("network")
        #expect(files.count >= 5)
        for file in files { fuzzNetworkFile(Array(try Data(contentsOf: file))) }
    }

    @Test func theTOMLCorpusReplays() throws {
        let files = Self.corpus("toml")
        #expect(files.count >= 5)
        for file in files { fuzzTOML(Array(try Data(contentsOf: file))) }
    }

    @Test func theRecordingCorpusReplays() throws {
        let files = Self.corpus("arrow")
        #expect(files.count >= 5)
        for file in files { fuzzArrowStream(Array(try Data(contentsOf: file))) }
    }
}
