import Foundation

/// The safetensors layout every mpcd network file shares: one tensor pair (`weight`, `bias`) per
/// layer, named `hidden.<i>`, `mean` and `log_std`, and the architecture in `__metadata__`
/// (`format = mpcd-network`, `kind`, `task`, `inputs`, `hidden`, `outputs`, `activation`) next to
/// what the kind of network adds.
public enum NetworkFile {
    static func tensorNames(hiddenLayers: Int) -> [String] {
        (0..<hiddenLayers).map { "hidden.\($0)" } + ["mean", "log_std"]
    }

    static func encode(_ mlp: MLP, kind: String, task: String, metadata extra: [String: String]) -> Data {
        let a = mlp.architecture
        var tensors: [String: SafeTensors.Tensor] = [:]
        for (name, (shape, offsets)) in zip(tensorNames(hiddenLayers: a.hidden.count), zip(a.layerShapes, mlp.layerOffsets)) {
            let weights = Array(mlp.parameters[offsets.weights..<(offsets.weights + shape.rows * shape.columns)])
            tensors["\(name).weight"] = .init(shape: [shape.rows, shape.columns], values: weights)
            tensors["\(name).bias"] = .init(shape: [shape.rows], values: Array(mlp.parameters[offsets.bias..<(offsets.bias + shape.rows)]))
        }
        let metadata = [
            "format": "mpcd-network", "format_version": "1", "kind": kind, "task": task,
            "inputs": String(a.inputs), "hidden": a.hidden.map(String.init).joined(separator: ","),
            "outputs": String(a.outputs), "activation": a.activation.rawValue,
        ].merging(extra) { first, _ in first }
        return SafeTensors.encode(.init(metadata: metadata, tensors: tensors))
    }

    /// Largest weights file read: a network of `MLPArchitecture.maxParameters` in F64 with room
    /// for its header. A bigger file is refused before it is read.
    public static let maxFileBytes = 8 * MLPArchitecture.maxParameters + (1 << 20)

    /// The bytes of a weights file: a regular file no larger than `maxFileBytes`, else the reason.
    public static func read(path: String) throws(AmortisedNetwork.LoadError) -> Data {
        do {
            return try FileReading.read(path, limit: maxFileBytes)
        } catch {
            throw AmortisedNetwork.LoadError(path: path, reason: error.reason + (error.reason.hasPrefix("is ") && error.reason.contains("bytes") ? " (\(MLPArchitecture.maxParameters) parameters at most)" : ""))
        }
    }

    /// Decodes the network in `data` for `task`, refusing with the reason: a file that is not an
    /// mpcd network, of a kind not in `kinds`, for another task, whose inputs are not the task's
    /// features, or whose tensors are missing, misshapen, not finite or unexpected. `check` sees
    /// the metadata and architecture before the tensors are read.
    static func decode(_ data: Data, for task: ControlTask, path: String, kinds: [String],
                       check: ([String: String], MLPArchitecture) throws(AmortisedNetwork.LoadError) -> Void) throws(AmortisedNetwork.LoadError) -> (MLP, [String: String]) {
        func fail(_ reason: String) -> AmortisedNetwork.LoadError { AmortisedNetwork.LoadError(path: path, reason: reason) }
        let file: SafeTensors.File
        do {
            file = try SafeTensors.decode(data)
        } catch {
            throw fail(error.reason)
        }
        let m = file.metadata
        guard m["format"] == "mpcd-network" else { throw fail("not an mpcd network (__metadata__ format is \(m["format"].map { "\"\($0)\"" } ?? "missing"))") }
        guard let kind = m["kind"], kinds.contains(kind) else {
            throw fail("__metadata__ kind is \(m["kind"].map { "\"\($0)\"" } ?? "missing"); expected \(kinds.joined(separator: " or "))")
        }
        guard m["task"] == task.name else { throw fail("made for task \(m["task"] ?? "?"), but the task is \(task.name)") }
        guard let inputs = m["inputs"].flatMap(Int.init), let outputs = m["outputs"].flatMap(Int.init),
              let activation = m["activation"].flatMap(MLPArchitecture.Activation.init(rawValue:)) else {
            throw fail("__metadata__ needs inputs, outputs and activation (tanh or relu)")
        }
        let hiddenText = m["hidden"] ?? ""
        let hidden = hiddenText.isEmpty ? [] : hiddenText.split(separator: ",").compactMap { Int($0) }
        guard hidden.count == (hiddenText.isEmpty ? 0 : hiddenText.split(separator: ",").count), hidden.allSatisfy({ $0 > 0 }) else {
            throw fail("__metadata__ hidden must list positive layer widths, got \"\(hiddenText)\"")
        }
        let d = task.dynamics
        guard inputs == d.featureNames.count else {
            throw fail("takes \(inputs) inputs, the task has \(d.featureNames.count) (\(d.featureNames.joined(separator: ", ")))")
        }
        guard outputs >= 1 else { throw fail("__metadata__ outputs must be positive") }
        // the architecture comes from the file: its size is checked before anything is allocated
        guard let count = MLPArchitecture.checkedParameterCount(inputs: inputs, hidden: hidden, outputs: outputs),
              count <= data.count / 4 else {
            throw fail("__metadata__ describes a network (inputs \(inputs), hidden \"\(hiddenText)\", outputs \(outputs)) larger than the file can hold or than \(MLPArchitecture.maxParameters) parameters")
        }
        let architecture = MLPArchitecture(inputs: inputs, hidden: hidden, outputs: outputs, activation: activation)
        try check(m, architecture)
        var parameters: [Float] = []
        parameters.reserveCapacity(architecture.parameterCount)
        for (name, shape) in zip(tensorNames(hiddenLayers: hidden.count), architecture.layerShapes) {
            for (suffix, expected) in [("weight", [shape.rows, shape.columns]), ("bias", [shape.rows])] {
                guard let tensor = file.tensors["\(name).\(suffix)"] else { throw fail("tensor \(name).\(suffix) is missing") }
                guard tensor.shape == expected else { throw fail("tensor \(name).\(suffix) has shape \(tensor.shape), expected \(expected)") }
                if let bad = tensor.values.firstIndex(where: { !$0.isFinite }) {
                    throw fail("tensor \(name).\(suffix) value \(bad) is not finite")
                }
                parameters += tensor.values
            }
        }
        let expected = Set(tensorNames(hiddenLayers: hidden.count).flatMap { ["\($0).weight", "\($0).bias"] })
        if let extra = Set(file.tensors.keys).subtracting(expected).sorted().first { throw fail("unexpected tensor \(extra)") }
        return (MLP(architecture: architecture, parameters: parameters), m)
    }
}
