import Foundation
import Models

/// The file both trainers (`Distiller`, `ValueIterationLearner`) resume from: the network's own
/// safetensors with the round count, the random stream and the optimiser beside it, plus tensors
/// of the trainer's own (`checkpoint.` names). Decoding takes all of those out again, so that what
/// is left decodes as the network.
struct TrainingCheckpoint {
    var network: Data
    var optimiser: AdamOptimizer
    var rounds: Int
    var random: UInt64
    var tensors: [String: SafeTensors.Tensor]

    init(network: Data, optimiser: AdamOptimizer, rounds: Int, random: UInt64, tensors: [String: SafeTensors.Tensor]) {
        self.network = network
        self.optimiser = optimiser
        self.rounds = rounds
        self.random = random
        self.tensors = tensors
    }

    /// The file, with `metadata` (what the caller records of its inputs) among the network's.
    func encoded(metadata extra: [String: String]) -> Data {
        // the network encoded it a moment ago: it cannot fail to decode
        var file = try! SafeTensors.decode(network)
        file.metadata.merge(extra) { _, given in given }
        file.metadata["checkpoint_rounds"] = String(rounds)
        file.metadata["checkpoint_random"] = String(random)
        optimiser.store(in: &file)
        file.tensors.merge(tensors) { _, given in given }
        return SafeTensors.encode(file)
    }

    /// Reads a checkpoint that must carry the tensors `names`; `kind` names it in the error
    /// ("a training checkpoint") when something is missing.
    init(decoding data: Data, tensors names: [String], learningRate: Float, path: String, kind: String) throws {
        var file = try SafeTensors.decode(data)
        let optimiser = AdamOptimizer.take(from: &file, learningRate: learningRate)
        let saved = names.map { file.tensors.removeValue(forKey: $0) }
        guard let rounds = file.metadata.removeValue(forKey: "checkpoint_rounds").flatMap(Int.init), let optimiser,
              let random = file.metadata.removeValue(forKey: "checkpoint_random").flatMap(UInt64.init),
              saved.allSatisfy({ $0 != nil }) else {
            throw AmortisedNetwork.LoadError(path: path, reason: "not \(kind)")
        }
        self.init(network: SafeTensors.encode(file), optimiser: optimiser, rounds: rounds, random: random,
                  tensors: Dictionary(uniqueKeysWithValues: zip(names, saved.map { $0! })))
    }

    /// Refuses a round count or an optimiser state that training could not have saved for a
    /// network of `parameterCount` parameters (moments of another length, not finite, a negative
    /// second moment or step), which would otherwise trap or turn the weights to NaN at the first
    /// update. Called once the network is known to be the one asked for.
    func checkState(parameterCount: Int, path: String) throws {
        // a step count far past any training (2^40 updates), not Int.max, which would trap at the next
        guard rounds >= 0, (0...(1 << 40)).contains(optimiser.step), optimiser.firstMoment.count == parameterCount,
              optimiser.secondMoment.count == parameterCount, optimiser.firstMoment.allSatisfy(\.isFinite),
              optimiser.secondMoment.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw AmortisedNetwork.LoadError(path: path, reason: "a damaged checkpoint: its round count or optimiser state is not one training saves")
        }
    }
}
