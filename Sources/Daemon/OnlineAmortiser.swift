import CSystemShims
import Dispatch
import Foundation
import Logging
import Models
import Planners
import Synchronization

/// Online amortisation: live ticks distilled into the prior network in the background.
///
/// The tick thread records each refined plan (the network's input and the refined distribution)
/// into a bounded buffer, which costs a copy under a lock. A background thread at the lowest
/// scheduling priority (nice 19) fits a private copy of the network to minibatches drawn from the
/// buffer (KL, Adam) and every `publishEvery` steps publishes a new version; the tick thread swaps
/// it into the sessions between ticks. Published weights are written atomically to the state
/// directory, and loaded again at the next start.
final class OnlineAmortiser: @unchecked Sendable {
    struct Settings: Sendable, Equatable {
        var learningRate: Float = 1e-3
        var batchSize = 64
        var bufferRows = 50_000
        var publishEvery = 50
        var saveEvery: Double = 10

        init() {}

        /// The `[prior]` table's online settings.
        init(_ prior: PriorConfiguration) {
            learningRate = prior.onlineLearningRate
            batchSize = prior.onlineBatch
            bufferRows = prior.onlineBuffer
            publishEvery = prior.onlinePublishEvery
        }
    }

    let settings: Settings
    let task: ControlTask
    let stateFile: String?
    /// What its network learns for (`PriorConfiguration.onlineFingerprint`).
    let fingerprint: UInt64
    private let logger: Logger
    private let lock = NSLock()
    // The sample buffer (a ring of rows) and the latest published network, guarded by `lock`.
    private var inputs: [Float], means: [Float], stds: [Float]
    private var rows = 0, next = 0
    private var published: AmortisedNetwork
    private let running = Atomic<Bool>(false)
    private let queue = DispatchQueue(label: "mpcd.online-amortisation")
    private let finished = DispatchGroup()
    let inputWidth: Int, outputWidth: Int
    /// The shape of the network it trains.
    let architecture: MLPArchitecture

    init(network: AmortisedNetwork, task: ControlTask, settings: Settings, stateFile: String?, fingerprint: UInt64, logger: Logger) {
        self.settings = settings
        self.task = task
        self.stateFile = stateFile
        self.fingerprint = fingerprint
        self.logger = logger
        published = network
        architecture = network.mlp.architecture
        inputWidth = network.mlp.architecture.inputs
        outputWidth = network.mlp.architecture.outputs
        inputs = Array(repeating: 0, count: settings.bufferRows * inputWidth)
        means = Array(repeating: 0, count: settings.bufferRows * outputWidth)
        stds = Array(repeating: 0, count: settings.bufferRows * outputWidth)
    }

    /// Records one refined plan (tick thread).
    func record(state: [Float], plan: Plan) {
        guard !plan.iterations.isEmpty, !plan.failed else { return }
        let features = task.dynamics.features(of: state)
        lock.lock()
        defer { lock.unlock() }
        let row = next
        for i in 0..<inputWidth { inputs[row * inputWidth + i] = features[i] }
        for i in 0..<outputWidth {
            means[row * outputWidth + i] = plan.sequence.mean[i]
            stds[row * outputWidth + i] = plan.sequence.std[i]
        }
        next = (next + 1) % settings.bufferRows
        rows = min(rows + 1, settings.bufferRows)
    }

    /// The latest published network if it is newer than `version` (tick thread, between ticks).
    func latest(newerThan version: Int) -> AmortisedNetwork? {
        lock.lock()
        defer { lock.unlock() }
        return published.version > version ? published : nil
    }

    func start() {
        guard !running.exchange(true, ordering: .relaxed) else { return }
        finished.enter()
        queue.async { [self] in
            _ = mpcd_lower_thread_priority()
            train()
            finished.leave()
        }
    }

    /// Stops training and waits for the background thread to finish its step.
    func stop() {
        guard running.exchange(false, ordering: .relaxed) else { return }
        finished.wait()
    }

    private func train() {
        lock.lock()
        var network = published
        lock.unlock()
        var optimiser = AdamOptimizer(parameterCount: network.mlp.parameters.count, learningRate: settings.learningRate)
        let batch = settings.batchSize, workspace = network.makeWorkspace(capacity: batch)
        let gradient = UnsafeMutablePointer<Float>.allocate(capacity: network.mlp.parameters.count)
        let targetMean = UnsafeMutablePointer<Float>.allocate(capacity: batch * outputWidth)
        let targetStd = UnsafeMutablePointer<Float>.allocate(capacity: batch * outputWidth)
        defer { gradient.deallocate(); targetMean.deallocate(); targetStd.deallocate() }
        var random: UInt64 = 0x0123_4567_89AB_CDEF, steps = 0, lastSave = Date()
        while running.load(ordering: .relaxed) {
            lock.lock()
            let available = rows
            if available >= batch {
                for r in 0..<batch {
                    let row = Int(splitMix64(&random) % UInt64(available))
                    for i in 0..<inputWidth { workspace.input[r * inputWidth + i] = inputs[row * inputWidth + i] }
                    for i in 0..<outputWidth {
                        targetMean[r * outputWidth + i] = means[row * outputWidth + i]
                        targetStd[r * outputWidth + i] = stds[row * outputWidth + i]
                    }
                }
            }
            lock.unlock()
            guard available >= batch else {
                usleep(20_000)
                continue
            }
            _ = network.klLossAndGradient(rows: batch, workspace: workspace, targetMean: targetMean, targetStd: targetStd, gradient: gradient)
            optimiser.update(&network.mlp.parameters, gradient: gradient)
            steps += 1
            if steps % settings.publishEvery == 0 {
                network.version += 1
                lock.lock()
                published = network
                lock.unlock()
                if Date().timeIntervalSince(lastSave) >= settings.saveEvery {
                    lastSave = Date()
                    save(network)
                }
            }
        }
        // the last save, at a stop or a reload
        if network.version > 0 { save(network) }
    }

    /// Writes the weights to the state file, if there is one. A failure is logged, never silent:
    /// what was learnt since the last save that succeeded would be lost at the next start.
    private func save(_ network: AmortisedNetwork) {
        guard let stateFile else { return }
        do {
            try network.save(to: stateFile)
        } catch {
            logger.error("cannot save the online network", metadata: ["file": "\(stateFile)", "error": "\(error)"])
        }
    }
}
