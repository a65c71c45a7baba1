import Dispatch
import Foundation
import Synchronization

/// Splits a job across the calling thread and dedicated worker threads that wait for work by
/// spinning for a short while before they sleep.
///
/// Handing work to a sleeping thread costs tens of microseconds on these machines (a wake-up
/// through the kernel and the hypervisor), as much as the rollouts it would share; a worker that
/// is still spinning picks the job up in well under a microsecond. Workers spin for `spin` after
/// each job, so back-to-back iterations and commands find them awake, and sleep when work stops.
/// The workers hold only the shared `Crew`, so the pool's deinit can stop and join them.
///
/// One pool may serve many planners (the daemon gives all its sessions one, so a box runs one
/// set of workers however many robots it serves): a caller that finds the workers busy with
/// another planner's job runs every part itself. Callers split work so that the split never
/// changes a result, so a plan is the same whoever runs which part.
public final class SpinningPool: @unchecked Sendable {
    let extraWorkers: Int
    /// Threads a job runs on when the workers are free, the caller's included.
    public var threads: Int { extraWorkers + 1 }
    private let crew: Crew
    /// Whether a caller holds the workers.
    private let busy = Atomic<Bool>(false)

    /// `threads` in all (at most the cores: `usableThreads`), counting the caller; workers spin `spin` nanoseconds before sleeping.
    /// `cores`: the most threads to take (tests that check a split give more than they have).
    public init(threads: Int, spin: UInt64 = 200_000, cores: Int = availableCores()) {
        extraWorkers = max(0, min(Self.usableThreads(threads, cores: cores) - 1, 64))
        crew = Crew(workers: extraWorkers, spin: spin)
        for index in 0..<extraWorkers {
            crew.exited.enter()
            let crew = self.crew
            let thread = Thread {
                crew.work(index)
                crew.exited.leave()
            }
            thread.name = "mpcd.planner.\(index + 1)"
            thread.start()
        }
    }

    deinit { crew.stop() }

    /// The threads a pool asked for `requested` gets: no more than the cores this process may run
    /// on. Spinning workers beyond them take turns on the cores, each job waiting for the
    /// scheduler's time slices: 8 threads on 2 cores planned ten times slower than 2.
    public static func usableThreads(_ requested: Int, cores: Int = availableCores()) -> Int {
        max(1, min(requested, cores))
    }

    /// The cores this process may run on now: Foundation's count (online CPUs, or a cgroup v1
    /// quota) within the CPU affinity mask (taskset, systemd's CPUAffinity=, `server.cpu_affinity`),
    /// which Foundation does not read.
    public static func availableCores() -> Int {
        let online = ProcessInfo.processInfo.activeProcessorCount
        guard let allowed = allowedCPUs() else { return max(1, online) }
        return max(1, min(online, allowed.count))
    }

    /// The CPUs this process may run on (its affinity mask), or nil where the kernel does not say.
    public static func allowedCPUs() -> Set<Int>? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) else { return nil }
        return cpus(list: line.dropFirst("Cpus_allowed_list:".count))
    }

    /// The CPUs a kernel CPU list names ("0-3,8,10-11": 7 of them), or nil if it is not one.
    static func cpus(list: Substring) -> Set<Int>? {
        var cpus = Set<Int>()
        for part in list.split(separator: ",") {
            let bounds = part.split(separator: "-").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard (1...2).contains(bounds.count), let first = bounds[0], let last = bounds.last!, first >= 0, last >= first,
                  last - first < 1 << 16 else { return nil }
            cpus.formUnion(first...last)
        }
        return cpus.isEmpty ? nil : cpus
    }

    /// Runs `body(part)` for every part 0 ... extraWorkers: part 0 on the caller and the others on
    /// the workers, or all on the caller while another caller holds the workers. Returns when all
    /// have finished.
    func run(_ body: @escaping @Sendable (Int) -> Void) {
        guard extraWorkers > 0, busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for part in 0...extraWorkers { body(part) }
            return
        }
        crew.post(body)
        body(0)
        crew.awaitWorkers()
        busy.store(false, ordering: .releasing)
    }
}

private final class Crew: @unchecked Sendable {
    let workers: Int
    let spin: UInt64
    let exited = DispatchGroup()
    /// Written before `generation` is bumped (release), read after it is seen (acquire).
    private var job: (@Sendable (Int) -> Void)?
    private let generation = Atomic<Int>(0)
    private let finished = Atomic<Int>(0)
    private let alive = Atomic<Bool>(true)
    /// Bit i set: worker i is asleep, or about to be, and must be woken.
    private let parked = Atomic<UInt64>(0)
    private let wake: [DispatchSemaphore]

    init(workers: Int, spin: UInt64) {
        self.workers = workers
        self.spin = spin
        wake = (0..<workers).map { _ in DispatchSemaphore(value: 0) }
    }

    func post(_ body: @escaping @Sendable (Int) -> Void) {
        job = body
        finished.store(0, ordering: .relaxed)
        generation.add(1, ordering: .releasing)
        wakeParked()
    }

    func awaitWorkers() {
        while finished.load(ordering: .acquiring) < workers {}
        job = nil
    }

    func stop() {
        alive.store(false, ordering: .releasing)
        generation.add(1, ordering: .releasing)
        wakeParked()
        exited.wait()
    }

    /// Clears every parked bit and signals the workers that were parked.
    private func wakeParked() {
        let was = parked.exchange(0, ordering: .acquiringAndReleasing)
        for i in 0..<workers where was & (1 << UInt64(i)) != 0 { wake[i].signal() }
    }

    func work(_ index: Int) {
        let bit: UInt64 = 1 << UInt64(index)
        // 0, not a fresh load: a job may be posted before this thread first runs
        var seen = 0
        while alive.load(ordering: .acquiring) {
            // spin for a while, then sleep until post() or stop() wakes this worker
            let giveUp = monotonicNanoseconds() &+ spin
            var current = generation.load(ordering: .acquiring)
            while current == seen && monotonicNanoseconds() < giveUp { current = generation.load(ordering: .acquiring) }
            if current == seen {
                parked.bitwiseOr(bit, ordering: .acquiringAndReleasing)
                // look again after announcing the nap, so a job posted meanwhile is not missed
                if generation.load(ordering: .acquiring) == seen {
                    wake[index].wait()
                } else if parked.bitwiseAnd(~bit, ordering: .acquiringAndReleasing).oldValue & bit == 0 {
                    wake[index].wait()  // wakeParked() took the bit and signals: consume the signal
                }
                continue
            }
            seen = current
            guard alive.load(ordering: .acquiring), let job else { continue }
            job(index + 1)
            finished.add(1, ordering: .releasing)
        }
    }
}
