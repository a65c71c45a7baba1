import Daemon
import Foundation
import Models
import Testing

@Suite struct ConfigurationTests {
    @Test func theEmbeddedDefaultIsPendulumWithMPPIOnLoopback() throws {
        let c = try DaemonConfiguration.parse(DaemonConfiguration.embeddedDefault, source: "default")
        #expect(c.task.name == "pendulum")
        #expect(c.planner.likelihood == "mppi")
        #expect(c.server.endpoints == ["tcp://127.0.0.1:5555"])
        #expect(c.rateHz == 20)
    }

    @Test func everyExampleConfigurationLoads() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../deploy/config").standardized
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".toml") }
        // one TASK.toml per task, and variants named TASK_SOMETHING.toml
        #expect(Set(TaskRegistry.builtInNames).isSubset(of: Set(files.map { String($0.dropLast(5)) })))
        for file in files {
            let c = try DaemonConfiguration.load(path: folder.appendingPathComponent(file).path)
            #expect(file == c.task.name + ".toml" || file.hasPrefix(c.task.name + "_"), "\(file) configures \(c.task.name)")
        }
    }

    func failure(_ text: String) -> DaemonConfiguration.LoadError? {
        do {
            _ = try DaemonConfiguration.parse(text, source: "test.toml")
            return nil
        } catch { return error }
    }

    @Test func errorsNameTheFileTheKeyAndTheReason() {
        let cases: [(String, String, String)] = [
            ("[planner]\nsamples = -4\n", "planner.samples", "[1, 1048576]"),
            ("[planner]\nlikelihood = \"cem\"\nelites = 5000\n", "planner.elites", "at most samples"),
            ("[server]\nmode = \"fast\"\n", "server.mode", "realtime, lockstep"),
            ("[server]\nendpoints = [\"http://x\"]\n", "server.endpoints", "not a tcp://"),
            ("[server]\nmode = \"realtime\"\nbudget_fraction = 2.0\n", "server.budget_fraction", "[0.05, 1] in realtime mode"),
            ("[server]\nbudget_fraction = 200.0\n", "server.budget_fraction", "[0.05, 100]"),
            ("[servr]\n", "servr", "unknown key"),
            ("[task]\nname = \"pendulum\"\nmass = \"heavy\"\n", "task.mass", "got a string"),
            ("[task]\nname = \"unicycle\"\n[[task.obstacles]]\nx = 1\n", "task.obstacles[0].y", "required"),
            ("[planner]\nsamples = \n", "line 2", "expected"),
        ]
        for (text, location, reason) in cases {
            let error = failure(text)
            #expect(error?.source == "test.toml")
            #expect(error?.location.contains(location) == true, "expected \(location), got \(String(describing: error))")
            #expect(error?.reason.contains(reason) == true, "\(location): \(error?.reason ?? "no error")")
        }
    }

    @Test func aMissingFileIsAClearError() {
        #expect(throws: DaemonConfiguration.LoadError.self) { try DaemonConfiguration.load(path: "/nonexistent/mpcd.toml") }
    }
}

@Suite struct WireProtocolTests {
    @Test func headersRoundTrip() {
        let header = WireProtocol.Header(type: .action, a: 42, b: 7, c: 3, d: 9)
        #expect(header.bytes.count == 32)
        #expect(WireProtocol.Header(header.bytes) == header)
        #expect(WireProtocol.Header(Array(header.bytes.dropLast())) == nil)
    }

    @Test func observationsDecodeToTheirValues() throws {
        let frames = [WireProtocol.Header(type: .observation, a: 5, b: 2.5.bitPattern).bytes, WireProtocol.encodeFloat64([1.5, -2.0] as [Double])]
        #expect(try WireProtocol.decode(frames) == .observation(sequence: 5, timestamp: 2.5, values: [1.5, -2.0]))
        // header word c: the task_fingerprint of the hello the client holds
        let held = [WireProtocol.Header(type: .observation, a: 6, c: 0xDEAD_BEEF).bytes, WireProtocol.encodeFloat64([1.0] as [Double])]
        #expect(try WireProtocol.decode(held) == .observation(sequence: 6, timestamp: 0, values: [1.0], heldTask: 0xDEAD_BEEF))
    }

    @Test func parametersDecodeFromJSONNumbersOrArrays() throws {
        func decode(_ text: String) throws(WireProtocol.Refusal) -> WireProtocol.Request {
            try WireProtocol.decode([WireProtocol.Header(type: .parameters, a: 3).bytes, Array(text.utf8)])
        }
        #expect(try decode(#"{"goal": [1.5, -2], "goal_weight": 3}"#) == .parameters(sequence: 3, values: ["goal": [1.5, -2], "goal_weight": [3]]))
        // NaN arrives as a number, for the task to refuse by name
        guard case let .parameters(_, values, _) = try decode(#"{"goal": [NaN, 1]}"#) else { Issue.record("not parameters"); return }
        #expect(values["goal"]?[0].isNaN == true)
        for bad in ["", "[1]", #"{"goal": "x"}"#, #"{"goal": [[1]]}"#, "{goal: }"] {
            #expect(throws: WireProtocol.Refusal.self, "\(bad)") { try decode(bad) }
        }
        #expect(throws: WireProtocol.Refusal.self) { try WireProtocol.decode([WireProtocol.Header(type: .parameters).bytes]) }
    }

    @Test func badFramesAreRefusedWithTheirCode() {
        func code(_ frames: [[UInt8]]) -> WireProtocol.ErrorCode? {
            do {
                _ = try WireProtocol.decode(frames)
                return nil
            } catch { return error.code }
        }
        var future = WireProtocol.Header(type: .hello)
        future.version = 9
        #expect(code([]) == .malformed)
        #expect(code([Array("garbage".utf8)]) == .malformed)
        #expect(code([future.bytes]) == .unsupportedVersion)
        #expect(code([WireProtocol.Header(type: .action).bytes]) == .unknownType)
        #expect(code([WireProtocol.Header(type: .observation).bytes]) == .malformed)
        #expect(code([WireProtocol.Header(type: .observation).bytes, [1, 2, 3]]) == .malformed)
    }
}
