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
        for file in files { fuzzConfigure(Array(try Data(contentsOf: file))) }
    }
}
