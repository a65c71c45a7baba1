import ArgumentParser
import ConfigFiles
import Foundation
import Models

/// What a training checkpoint records of the run that wrote it: the networks its flags named (by
/// their bytes, however the path was spelled) and how the labeller starts and weighs the prior. A
/// run resumed with others would mix two kinds of labels or targets without a word, so it is
/// refused.
struct CheckpointInputs {
    static let describedKey = "checkpoint_inputs"
    static let fingerprintKey = "checkpoint_inputs_fingerprint"
    /// Checkpoints hold labels or two networks and an optimiser: far above a weights file, still bounded.
    static let maxCheckpointBytes = 1 << 34

    /// The flags as given, for the refusal's message.
    let described: String
    /// What is compared: each named network's FNV-1a hash and the labeller's settings.
    let fingerprint: String

    init(networks: [(flag: String, name: String, data: Data)], labelPriorStart: String, labelPriorStrength: Float) {
        let labeller = "--label-prior-start \(labelPriorStart) --label-prior-strength \(labelPriorStrength)"
        described = (networks.map { "\($0.flag) \($0.name)" } + [labeller]).joined(separator: " ")
        fingerprint = (networks.map { "\($0.flag) fnv1a:\(String(fnv1a($0.data), radix: 16))" } + [labeller]).joined(separator: " ")
    }

    private init(described: String, fingerprint: String) {
        self.described = described
        self.fingerprint = fingerprint
    }

    /// A checkpoint from before checkpoints recorded their inputs resumes as one written with no
    /// network named and the labeller's defaults, the only runs there were.
    static let unrecorded: CheckpointInputs = {
        let defaults = CheckpointInputs(networks: [], labelPriorStart: "cheaper", labelPriorStrength: 0)
        return CheckpointInputs(described: "nothing recorded (a checkpoint from before mpcd recorded them)", fingerprint: defaults.fingerprint)
    }()


    /// What a checkpoint's metadata records of these inputs (`checkpointData(metadata:)`).
    var metadata: [String: String] { [Self.describedKey: described, Self.fingerprintKey: fingerprint] }

    /// Resumes from the checkpoint at `path`: what kind of checkpoint it is first (`restore` says,
    /// given the bytes without the record), then whether it was written with these inputs.
    func resume(from path: String, restore: (Data) throws -> Void) throws {
        let (data, written) = try Self.read(path)
        do {
            try restore(data)
        } catch {
            throw ValidationError("\(error); --fresh starts over")
        }
        try check(written: written, path: path)
    }

    /// The checkpoint at `path` without the record, and the inputs it records.
    private static func read(_ path: String) throws -> (data: Data, inputs: CheckpointInputs) {
        var file: SafeTensors.File
        do {
            file = try SafeTensors.decode(FileReading.read(path, limit: maxCheckpointBytes))
        } catch {
            throw ValidationError("\(path): not a checkpoint mpcd train can resume (\(error)); --fresh starts over")
        }
        let described = file.metadata.removeValue(forKey: describedKey)
        let inputs = file.metadata.removeValue(forKey: fingerprintKey).map { CheckpointInputs(described: described ?? $0, fingerprint: $0) } ?? unrecorded
        return (SafeTensors.encode(file), inputs)
    }

    /// Refuses to go on from a checkpoint written with other inputs than this run's.
    func check(written: CheckpointInputs, path: String) throws {
        guard written.fingerprint != fingerprint else { return }
        throw ValidationError("\(path) was written with \(written.described); this run has \(described) (the same networks byte for byte and the same labeller are needed): run with those, or with --fresh")
    }
}
