import ArrowIPC
import CSystemShims
import Foundation
import Logging
import Synchronization

/// Rows written, rows dropped (the queue full, or a write failed), bytes written, files begun:
/// shared by every recorder a daemon starts, so they count since the daemon started.
public final class RecordingCounters: Sendable {
    public let written = Atomic<UInt64>(0)
    public let dropped = Atomic<UInt64>(0)
    public let bytes = Atomic<UInt64>(0)
    public let files = Atomic<UInt64>(0)
    public init() {}
}

/// Writes every recorded tick to Arrow stream files off the tick path: the serving thread hands
/// records over (`record`) without waiting; a thread of its own (normal scheduler, nice 19) batches
/// them every 0.2 s, writes, rotates files at `file_mb` and deletes the oldest beyond `budget_mb`.
/// When the queue is full or the disk refuses, records are dropped and counted, never waited for.
public final class TickRecorder: @unchecked Sendable {
    public let settings: RecordingConfiguration
    let fields: [ArrowField]
    let metadata: [(key: String, value: String)]
    let logger: Logger
    /// The record shape the fields hold: state, action and horizon, and the diagnostics' count.
    let shape: (states: Int, actions: Int, horizon: Int)
    private let condition = NSCondition()
    private var queue: [TickRecord] = []
    private var stopping = false
    private let running = DispatchGroup()
    public let counters: RecordingCounters
    private let shared = Mutex<(path: String, problem: String?)>(("", nil))
    /// The file being written ("" between files).
    public var currentPath: String { shared.withLock { $0.path } }
    /// Why the last write failed, until one succeeds again.
    public var problem: String? { shared.withLock { $0.problem } }
    // writer thread only:
    private var predecessor: TickRecorder?
    private var spare: [TickRecord] = []
    private var file: FileHandle?
    private var fileSize = 0
    private var closedFiles: [(path: String, size: Int)] = []
    private var lastFailureLog: Date?
    private var retryAfter = Date.distantPast
    static let batchInterval = 0.2
    static let filePrefix = "mpcd-", fileSuffix = ".arrows"

    /// Starts the writer; the folder is created (0750) when missing. A `predecessor` (the recorder
    /// this one replaces) is stopped on the new writer's thread before it looks at the folder, so
    /// its last file is closed and counted, and the serving thread never waits for a disk.
    public init(settings: RecordingConfiguration, fields: [ArrowField], shape: (states: Int, actions: Int, horizon: Int),
                metadata: [(key: String, value: String)], counters: RecordingCounters = RecordingCounters(),
                predecessor: TickRecorder? = nil, logger: Logger) throws {
        self.settings = settings
        self.counters = counters
        self.fields = fields
        self.shape = shape
        self.metadata = metadata
        self.logger = logger
        self.predecessor = predecessor
        try FileManager.default.createDirectory(atPath: settings.directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o750])
        running.enter()
        let thread = Thread { [self] in run() }
        thread.name = "mpcd-recorder"
        thread.start()
    }

    /// The recordings in `directory` (regular files named as mpcd names them), oldest first, with their sizes.
    static func recordings(in directory: String) -> [(path: String, size: Int)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix(filePrefix) && $0.hasSuffix(fileSuffix) }.sorted().compactMap { name in
            let path = (directory as NSString).appendingPathComponent(name)
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
                  attributes[.type] as? FileAttributeType == .typeRegular, let size = attributes[.size] as? Int else { return nil }
            return (path, size)
        }
    }

    /// Hands records to the writer; those the queue has no room for, or of another shape than the
    /// file's (a session a failed rebuild left on another horizon), are dropped and counted.
    public func record(_ records: [TickRecord]) {
        guard !records.isEmpty else { return }
        let (n, m, h) = shape
        let fitting = records.filter {
            $0.observation.count == n && $0.state.count == n && $0.action.count == m && $0.plannedAction.count == m
                && $0.planMean.count == h * m && $0.planStd.count == h * m && $0.appliedLast.count == m && $0.appliedBeforeLast.count == m
                && $0.diagnostics.count == WireProtocol.diagnosticNames.count
        }
        condition.lock()
        let room = max(0, settings.queueTicks - queue.count)
        let dropped = records.count - min(room, fitting.count)
        if dropped > 0 { counters.dropped.add(UInt64(dropped), ordering: .relaxed) }
        queue += fitting.prefix(room)
        condition.unlock()
    }

    /// Writes what is queued, ends the file and stops the thread; waits at most `timeout` seconds
    /// (a hung disk) and says whether it finished. Safe to call more than once.
    @discardableResult
    public func stop(timeout: Double = 10) -> Bool {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
        return running.wait(timeout: .now() + timeout) == .success
    }

    private func run() {
        // the serving thread comes first: on a busy box the writer waits, never the ticks (the
        // queue absorbs the delay, and what overflows it is counted)
        _ = mpcd_lower_thread_priority()
        if let predecessor, !predecessor.stop() {
            logger.warning("recording: the previous file did not close within 10 s (a slow disk?)", metadata: ["file": "\(predecessor.currentPath)"])
        }
        predecessor = nil
        closedFiles = Self.recordings(in: settings.directory)
        while true {
            condition.lock()
            if !stopping { _ = condition.wait(until: Date(timeIntervalSinceNow: Self.batchInterval)) }
            // the queue's storage is swapped, not copied: no allocation while the serving thread may wait
            swap(&queue, &spare)
            let last = stopping
            condition.unlock()
            if !spare.isEmpty { write(spare) }
            spare.removeAll(keepingCapacity: true)
            if last { break }
        }
        closeFile()
        running.leave()
    }

    /// About how many bytes a row takes (text columns guessed at 36 bytes).
    var rowBytes: Int {
        fields.reduce(0) { total, field in
            switch field.type {
            case .int32, .uint32, .float32: total + 4
            case .int64, .uint64, .float64, .timestamp: total + 8
            case .utf8: total + 36
            case let .float32List(size): total + 4 * size
            }
        }
    }

    /// Writes `batch` in record batches of at most a quarter of a file each, so that files keep
    /// near `file_mb` and the budget near `budget_mb`, however many rows arrive at once.
    private func write(_ batch: [TickRecord]) {
        let rowsPerMessage = max(1, settings.fileBytes / 4 / max(1, rowBytes))
        for start in stride(from: 0, to: batch.count, by: rowsPerMessage) {
            writeMessage(Array(batch[start..<min(batch.count, start + rowsPerMessage)]))
        }
    }

    private func writeMessage(_ batch: [TickRecord]) {
        let message: [UInt8]
        do {
            message = try ArrowStreamWriter.recordBatch(fields, TickRecord.columns(batch), rows: batch.count)
        } catch {
            fail(batch.count, because: "\(error)", closing: false)
            return
        }
        if file == nil || fileSize + message.count > settings.fileBytes && fileSize > 0 {
            closeFile()
            // after a failure the disk gets a second's rest: these rows are dropped meanwhile
            guard Date() >= retryAfter else {
                counters.dropped.add(UInt64(batch.count), ordering: .relaxed)
                return
            }
            do { try beginFile() } catch {
                fail(batch.count, because: "\(error)", closing: true)
                return
            }
        }
        do {
            try file?.write(contentsOf: message)
        } catch {
            fail(batch.count, because: "\(error)", closing: true)
            return
        }
        fileSize += message.count
        counters.written.add(UInt64(batch.count), ordering: .relaxed)
        counters.bytes.add(UInt64(message.count), ordering: .relaxed)
        shared.withLock { $0.problem = nil }
        enforceBudget()
    }

    /// Drops `rows` rows, counted and logged (at most every 10 s); a failing disk ends its file
    /// where it is (readers keep its complete batches) and is left alone for a second.
    private func fail(_ rows: Int, because reason: String, closing: Bool) {
        counters.dropped.add(UInt64(rows), ordering: .relaxed)
        shared.withLock { $0.problem = "cannot write: \(reason)" }
        if closing {
            closeFile(writeEnd: false)
            retryAfter = Date(timeIntervalSinceNow: 1)
        }
        if lastFailureLog.map({ Date().timeIntervalSince($0) > 10 }) ?? true {
            lastFailureLog = Date()
            logger.warning("recording: cannot write, ticks are being dropped", metadata: [
                "directory": "\(settings.directory)", "reason": "\(reason)", "dropped": "\(counters.dropped.load(ordering: .relaxed))",
            ])
        }
    }

    private func beginFile() throws {
        // names sort by time: the budget deletes the first ones
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss.SSS"
        let name = "\(Self.filePrefix)\(formatter.string(from: Date()))Z-\(counters.files.load(ordering: .relaxed) + 1)\(Self.fileSuffix)"
        let path = (settings.directory as NSString).appendingPathComponent(name)
        // a folder deleted while recording is made again (recording had stopped until a reload)
        try? FileManager.default.createDirectory(atPath: settings.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
        guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o640]),
              let handle = FileHandle(forWritingAtPath: path) else { throw ArrowError("cannot create \(path)") }
        let schema = ArrowStreamWriter.schema(fields, metadata: metadata)
        do { try handle.write(contentsOf: schema) } catch {
            // without its whole schema the file holds nothing readable: a full disk had left one
            // such empty file behind every second, never counted against budget_mb
            try? handle.close()
            try? FileManager.default.removeItem(atPath: path)
            throw error
        }
        file = handle
        fileSize = schema.count
        shared.withLock { $0.path = path }
        counters.files.add(1, ordering: .relaxed)
    }

    private func closeFile(writeEnd: Bool = true) {
        guard let file else { return }
        if writeEnd { try? file.write(contentsOf: ArrowStreamWriter.endOfStream) }
        try? file.close()
        self.file = nil
        closedFiles.append((currentPath, fileSize + (writeEnd ? 8 : 0)))
        shared.withLock { $0.path = "" }
    }

    /// Deletes the oldest closed recordings until they and the open file fit the budget; a file
    /// that cannot be deleted (gone, or not a regular file) is no longer counted but freed nothing.
    private func enforceBudget() {
        var total = closedFiles.reduce(0) { $0 + $1.size } + fileSize
        while total > settings.budgetBytes, !closedFiles.isEmpty {
            let oldest = closedFiles.removeFirst()
            total -= oldest.size
            let attributes = try? FileManager.default.attributesOfItem(atPath: oldest.path)
            guard attributes?[.type] as? FileAttributeType == .typeRegular else { continue }
            try? FileManager.default.removeItem(atPath: oldest.path)
        }
    }
}
