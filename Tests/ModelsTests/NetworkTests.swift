import Foundation
import Models
import Testing

@Suite struct NetworkTests {
    let pendulum = try! TaskRegistry.make(name: "pendulum")

    /// The analytic gradient of the KL loss against central finite differences, parameter by
    /// parameter, in double-checked float arithmetic.
    @Test(arguments: [MLPArchitecture.Activation.tanh, .relu])
    func trainingGradientMatchesFiniteDifferences(activation: MLPArchitecture.Activation) {
        var network = AmortisedNetwork(kind: .plan, task: pendulum, horizon: 3, hidden: [7, 5], activation: activation, seed: 3)
        let rows = 4, outputs = network.mlp.architecture.outputs, inputs = network.mlp.architecture.inputs
        let workspace = network.makeWorkspace(capacity: rows)
        let features = (0..<(rows * inputs)).map { Float(sin(Double($0) * 1.7)) }
        let targetMean = (0..<(rows * outputs)).map { Float(cos(Double($0))) * 1.5 }
        let targetStd = (0..<(rows * outputs)).map { 0.3 + 0.1 * Float($0 % 3) }
        func loss(_ n: AmortisedNetwork, gradient: UnsafeMutablePointer<Float>) -> Float {
            workspace.input.update(from: features, count: features.count)
            return n.klLossAndGradient(rows: rows, workspace: workspace, targetMean: targetMean, targetStd: targetStd, gradient: gradient)
        }
        let count = network.mlp.parameters.count
        let analytic = UnsafeMutablePointer<Float>.allocate(capacity: count), scratch = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { analytic.deallocate(); scratch.deallocate() }
        _ = loss(network, gradient: analytic)
        var worst: Float = 0
        for i in Swift.stride(from: 0, to: count, by: 3) {
            let original = network.mlp.parameters[i], h: Float = 1e-2
            network.mlp.parameters[i] = original + h
            let up = loss(network, gradient: scratch)
            network.mlp.parameters[i] = original - h
            let down = loss(network, gradient: scratch)
            network.mlp.parameters[i] = original
            let numeric = (up - down) / (2 * h)
            worst = max(worst, abs(numeric - analytic[i]) / max(1e-2, abs(numeric) + abs(analytic[i])))
        }
        #expect(worst < 2e-2, "worst relative gradient error \(worst)")
    }

    @Test func adamFitsAPolicyToATarget() {
        var network = AmortisedNetwork(kind: .policy, task: pendulum, hidden: [16], seed: 1)
        let rows = 32, workspace = network.makeWorkspace(capacity: rows)
        let states = (0..<rows).map { [Float($0) / 5 - 3, 0.5] }
        let features = states.flatMap { pendulum.dynamics.features(of: $0) }
        let targetMean = states.map { -1.5 * sin($0[0]) }, targetStd = [Float](repeating: 0.2, count: rows)
        var adam = AdamOptimizer(parameterCount: network.mlp.parameters.count, learningRate: 0.01)
        let gradient = UnsafeMutablePointer<Float>.allocate(capacity: network.mlp.parameters.count)
        defer { gradient.deallocate() }
        var first: Float = 0, last: Float = 0
        for step in 0..<1500 {
            workspace.input.update(from: features, count: features.count)
            last = network.klLossAndGradient(rows: rows, workspace: workspace, targetMean: targetMean, targetStd: targetStd, gradient: gradient)
            if step == 0 { first = last }
            adam.update(&network.mlp.parameters, gradient: gradient)
        }
        #expect(last < first / 20, "loss \(first) -> \(last)")
    }

    @Test func weightsFilesRoundTrip() throws {
        let network = AmortisedNetwork(kind: .plan, task: pendulum, horizon: 8, hidden: [12, 6], seed: 5)
        let decoded = try AmortisedNetwork.decode(network.encode(), for: pendulum, path: "x")
        #expect(decoded == network)
    }

    func refusal(_ edit: (inout SafeTensors.File) -> Void, task: String = "pendulum") -> String? {
        let network = AmortisedNetwork(kind: .policy, task: pendulum, hidden: [4], seed: 1)
        var file = try! SafeTensors.decode(network.encode())
        edit(&file)
        do {
            _ = try AmortisedNetwork.decode(SafeTensors.encode(file), for: try! TaskRegistry.make(name: task), path: "policy.safetensors")
            return nil
        } catch { return error.description }
    }

    @Test func badWeightsFilesAreRefusedWithTheReason() {
        #expect(refusal { $0.tensors["hidden.0.weight"]!.shape = [2, 6]; $0.tensors["hidden.0.weight"]!.values = Array(repeating: 0, count: 12) }?
            .contains("hidden.0.weight has shape [2, 6], expected [4, 3]") == true)
        #expect(refusal { $0.tensors["mean.bias"]!.values[0] = .nan }?.contains("mean.bias value 0 is not finite") == true)
        #expect(refusal({ _ in }, task: "mountain_car")?.contains("made for task pendulum") == true)
        #expect(refusal { $0.metadata["inputs"] = "2" }?.contains("takes 2 inputs, the task has 3 (cos_theta, sin_theta, theta_dot)") == true)
        #expect(refusal { $0.tensors["log_std.bias"] = nil }?.contains("log_std.bias is missing") == true)
        #expect(refusal { $0.metadata["format"] = nil }?.contains("not an mpcd network") == true)
        do {
            _ = try AmortisedNetwork.decode(Data([1, 2, 3]), for: pendulum, path: "p")
            Issue.record("a 3-byte file was accepted")
        } catch {
            #expect(error.reason.contains("too short"))
        }
    }
}

/// mpcd's forward pass against PyTorch's, on the network and inputs `scripts/export_torch.py
/// fixture` wrote (PyTorch ran there; this test needs no Python).
@Suite struct PyTorchAgreementTests {
    @Test func forwardPassAgreesWithPyTorchWithin1e5() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
        let pendulum = try TaskRegistry.make(name: "pendulum")
        let network = try AmortisedNetwork.load(path: folder.appendingPathComponent("torch_plan.safetensors").path, for: pendulum)
        #expect(network.kind == .plan && network.horizon == 4)
        let record = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("torch_plan.json"))) as! [String: Any]
        let inputs = record["inputs"] as! [[Double]]
        let workspace = network.makeWorkspace()
        var worst = 0.0
        for (row, x) in inputs.enumerated() {
            workspace.input.update(from: x.map { Float($0) }, count: x.count)
            network.mlp.forward(rows: 1, workspace: workspace)
            let (mean, std) = network.distribution(features: x.map { Float($0) }, workspace: workspace)
            for (key, ours) in [("raw_mean", (0..<4).map { workspace.rawMean[$0] }), ("raw_log_std", (0..<4).map { workspace.rawLogStd[$0] }),
                                ("mean", mean), ("std", std)] {
                let theirs = (record[key] as! [[Double]])[row]
                for (a, b) in zip(ours, theirs) { worst = max(worst, abs(Double(a) - b)) }
            }
        }
        #expect(worst <= 1e-5, "largest difference from PyTorch: \(worst)")
    }
}

/// Weights files crafted to kill the daemon (sizes, shapes and offsets near the integer limits,
/// architectures of billions of parameters) are refused with the reason, without a trap or a
/// large allocation.
@Suite struct CraftedWeightsFileTests {
    let pendulum = try! TaskRegistry.make(name: "pendulum")

    /// A safetensors file from a header and a data section.
    func file(header: [String: Any], data: Int = 64) -> Data {
        var json = try! JSONSerialization.data(withJSONObject: header)
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data()
        var length = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        return out + json + Data(count: data)
    }

    func metadata(hidden: String, inputs: String = "3", outputs: String = "1") -> [String: String] {
        ["format": "mpcd-network", "kind": "policy", "task": "pendulum", "inputs": inputs, "hidden": hidden, "outputs": outputs,
         "activation": "tanh", "horizon": "1", "actions": "1"]
    }

    func reason(_ data: Data) -> String? {
        do {
            _ = try AmortisedNetwork.decode(data, for: pendulum, path: "crafted")
            return nil
        } catch { return error.reason }
    }

    @Test func hugeArchitecturesInTheMetadataAreRefused() {
        for hidden in ["4294967296,4294967296", "100000,100000", "9223372036854775807", "3037000500,3037000500"] {
            let refused = reason(file(header: ["__metadata__": metadata(hidden: hidden)]))
            #expect(refused?.contains("larger than the file can hold") == true, "\(hidden): \(refused ?? "accepted")")
        }
        #expect(reason(file(header: ["__metadata__": metadata(hidden: "4", inputs: "9223372036854775807")])) != nil)
        #expect(reason(file(header: ["__metadata__": metadata(hidden: "4", outputs: "9223372036854775807")])) != nil)
        var plan = metadata(hidden: "4", outputs: "2")
        plan["kind"] = "plan"
        plan["horizon"] = "9223372036854775807"
        plan["actions"] = "2"
        #expect(reason(file(header: ["__metadata__": plan])) != nil)
    }

    @Test func shapesAndOffsetsNearTheLimitsAreRefused() {
        let cases: [[String: Any]] = [
            ["dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 16]],
            ["dtype": "F32", "shape": [Int.max, 2], "data_offsets": [0, 16]],
            ["dtype": "F32", "shape": [2, 2], "data_offsets": [Int.max - 8, Int.max]],
            ["dtype": "F32", "shape": [2, 2], "data_offsets": [0, Int.max]],
            ["dtype": "F32", "shape": [2, 2], "data_offsets": [16, 0]],
            ["dtype": "F32", "shape": [2, 2], "data_offsets": [-16, 0]],
            ["dtype": "F32", "shape": [2, 2], "data_offsets": [Int.min, Int.min + 16]],
            ["dtype": "F64", "shape": [-2, -2], "data_offsets": [0, 32]],
            ["dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 1 << 42]],
        ]
        for tensor in cases {
            do {
                _ = try SafeTensors.decode(file(header: ["t": tensor]))
                Issue.record("accepted \(tensor)")
            } catch {
                #expect(error.reason.contains("tensor t"), "\(error.reason)")
            }
        }
    }

    /// A header of megabytes (JSON takes tens of times that once parsed) is refused unparsed, and
    /// a header length that does not fit the file is not repeated (it is the file's first bytes).
    @Test func bigHeadersAreRefusedUnparsed() {
        var data = Data()
        var length = UInt64(2 << 20).littleEndian
        withUnsafeBytes(of: &length) { data.append(contentsOf: $0) }
        data.append(Data(repeating: 0x20, count: 2 << 20))
        func reason(_ data: Data) -> String? {
            do {
                _ = try SafeTensors.decode(data)
                return nil
            } catch { return error.reason }
        }
        #expect(reason(data) == "the header is over 1048576 bytes; mpcd's networks have a few tensors")
        #expect(reason(Data("TOPSECRET, and more".utf8)) == "not a safetensors file: its header length does not fit the file")
    }

    /// Tensors may not claim the same bytes over and over: together they fit in the data section.
    @Test func tensorsCannotShareBytes() {
        var header: [String: Any] = [:]
        for i in 0..<100 { header["t\(i)"] = ["dtype": "F32", "shape": [16], "data_offsets": [0, 64]] as [String: Any] }
        #expect(throws: SafeTensors.FormatError.self) { try SafeTensors.decode(file(header: header)) }
    }

    /// A file beyond the size limit, or not a regular file, is refused before it is read.
    @Test func bigFilesAndSpecialFilesAreRefusedUnread() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("mpcd-crafted-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let big = folder.appendingPathComponent("big.safetensors").path
        FileManager.default.createFile(atPath: big, contents: nil)
        truncate(big, off_t(NetworkFile.maxFileBytes + 1))  // sparse: no disk used
        #expect(throws: AmortisedNetwork.LoadError.self) { try NetworkFile.read(path: big) }
        #expect(throws: AmortisedNetwork.LoadError.self) { try NetworkFile.read(path: folder.path) }
        #expect(throws: AmortisedNetwork.LoadError.self) { try NetworkFile.read(path: "/dev/zero") }
    }
}

/// Outputs (weights, checkpoints, keys) never replace a link, a device or a folder, fail early with
/// the system's reason, and secret files are never readable by others, even for an instant.
@Suite struct FileWritingTests {
    let folder: String = {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("mpcd-writing-\(getpid())-\(UInt64.random(in: 0..<UInt64.max))").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    @Test func linksDevicesAndFoldersAreNeverReplaced() throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let target = folder + "/target", link = folder + "/link", fifo = folder + "/fifo"
        FileManager.default.createFile(atPath: target, contents: Data("keep".utf8))
        symlink(target, link)
        mkfifo(fifo, 0o600)
        for path in [link, fifo, folder, "/dev/null"] {
            #expect(throws: FileWriteError.self) { try FileWriting.writeAtomically(Data("x".utf8), to: path) }
        }
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "keep")
        var info = stat()
        #expect(lstat(link, &info) == 0 && info.st_mode & S_IFMT == S_IFLNK)
        #expect(stat("/dev/null", &info) == 0 && info.st_mode & S_IFMT == S_IFCHR)
        do {
            try FileWriting.checkReplaceable(folder + "/missing/out.safetensors")
            Issue.record("a missing folder was accepted")
        } catch {
            #expect(error.reason.contains("No such file or directory"), "\(error.reason)")
        }
        try FileWriting.writeAtomically(Data("new".utf8), to: target)
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "new")
    }

    @Test func newFilesHaveTheirModeFromTheStartAndNeverOverwrite() throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let previous = umask(0)
        defer { umask(previous) }
        let secret = folder + "/secret.key"
        try FileWriting.writeNew(Data("s".utf8), to: secret, mode: 0o600)
        var info = stat()
        #expect(stat(secret, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(throws: FileWriteError.self) { try FileWriting.writeNew(Data("t".utf8), to: secret, mode: 0o600) }
        let link = folder + "/planted"
        symlink(folder + "/elsewhere", link)
        #expect(throws: FileWriteError.self) { try FileWriting.writeNew(Data("t".utf8), to: link, mode: 0o600) }
        #expect(access(folder + "/elsewhere", F_OK) != 0)
    }
}
