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
