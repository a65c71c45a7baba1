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
/// records over (`record`) without waiting; a thread of its own batches them every 0.2 s, writes,
/// rotates files at `file_mb` and deletes the oldest beyond `budget_mb`. When the queue is full or
/// the disk refuses, records are dropped and counted, never waited for.
public final class TickRecorder: @unchecked Sendable {
    public let settings: RecordingConfiguration
    let fields: [ArrowField]
    let metadata: [(key: String, value: String)]
    let logger: Logger
    private let condition = NSCondition()
    private var queue: [TickRecord] = []
    private var stopping = false
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)
    public let counters: RecordingCounters
    private let currentPathLock = Mutex<String>("")
    /// The file being written ("" between files).
    public var currentPath: String { currentPathLock.withLock { $0 } }
    // writer thread only:
    private var file: FileHandle?
    private var fileSize = 0
    private var closedFiles: [(path: String, size: Int)] = []
    private var lastFailureLog: Date?
    private var retryAfter = Date.distantPast
    static let batchInterval = 0.2
    static let filePrefix = "mpcd-", fileSuffix = ".arrows"

    /// Starts the writer; the folder is created (0750) when missing.
    public init(settings: RecordingConfiguration, fields: [ArrowField], metadata: [(key: String, value: String)],
                counters: RecordingCounters = RecordingCounters(), logger: Logger) throws {
        self.settings = settings
        self.counters = counters
        self.fields = fields
        self.metadata = metadata
        self.logger = logger
        try FileManager.default.createDirectory(atPath: settings.directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o750])
        closedFiles = Self.recordings(in: settings.directory)
        let thread = Thread { [weak self] in self?.run() }
        thread.name = "mpcd-recorder"
        self.thread = thread
        thread.start()
    }

    /// The recordings in `directory`, oldest first, with their sizes.
    static func recordings(in directory: String) -> [(path: String, size: Int)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix(filePrefix) && $0.hasSuffix(fileSuffix) }.sorted().compactMap { name in
            let path = (directory as NSString).appendingPathComponent(name)
            guard let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int else { return nil }
            return (path, size)
        }
    }

    /// Hands records to the writer; those the queue has no room for are dropped and counted.
    public func record(_ records: [TickRecord]) {
        guard !records.isEmpty else { return }
        condition.lock()
        let room = max(0, settings.queueTicks - queue.count)
        if room < records.count { counters.dropped.add(UInt64(records.count - room), ordering: .relaxed) }
        queue += records.prefix(room)
        condition.unlock()
    }

    /// Writes what is queued, ends the file and stops the thread (blocks until done).
    public func stop() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
        finished.wait()
    }

    private func run() {
        // the serving thread comes first: on a busy box the writer waits, never the ticks (the
        // queue absorbs the delay, and what overflows it is counted)
        _ = mpcd_lower_thread_priority()
        while true {
            condition.lock()
            if !stopping { _ = condition.wait(until: Date(timeIntervalSinceNow: Self.batchInterval)) }
            let batch = queue, last = stopping
            queue.removeAll(keepingCapacity: true)
            condition.unlock()
            if !batch.isEmpty { write(batch) }
            if last { break }
        }
        closeFile()
        finished.signal()
    }

    /// About how many bytes a row takes (text columns guessed at 32 bytes).
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
        do {
            let message = try ArrowStreamWriter.recordBatch(fields, TickRecord.columns(batch), rows: batch.count)
            if file == nil || fileSize + message.count > settings.fileBytes && fileSize > 0 { try beginFile() }
            guard let file else { throw ArrowError("no file open") }
            try file.write(contentsOf: message)
            fileSize += message.count
            counters.written.add(UInt64(batch.count), ordering: .relaxed)
            counters.bytes.add(UInt64(message.count), ordering: .relaxed)
            enforceBudget()
        } catch {
            counters.dropped.add(UInt64(batch.count), ordering: .relaxed)
            // a failing disk: this file ends where it is (readers keep its complete batches)
            closeFile(writeEnd: false)
            retryAfter = Date(timeIntervalSinceNow: 1)
            if lastFailureLog.map({ Date().timeIntervalSince($0) > 10 }) ?? true {
                lastFailureLog = Date()
                logger.warning("recording: cannot write, ticks are being dropped", metadata: [
                    "directory": "\(settings.directory)", "reason": "\(error)", "dropped": "\(counters.dropped.load(ordering: .relaxed))",
                ])
            }
        }
    }

    private func beginFile() throws {
        closeFile()
        guard Date() >= retryAfter else { throw ArrowError("waiting before trying the disk again") }
        // names sort by time: the budget deletes the first ones
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss.SSS"
        let name = "\(Self.filePrefix)\(formatter.string(from: Date()))Z-\(counters.files.load(ordering: .relaxed) + 1)\(Self.fileSuffix)"
        let path = (settings.directory as NSString).appendingPathComponent(name)
        guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o640]),
              let handle = FileHandle(forWritingAtPath: path) else { throw ArrowError("cannot create \(path)") }
        let schema = ArrowStreamWriter.schema(fields, metadata: metadata)
        try handle.write(contentsOf: schema)
        file = handle
        fileSize = schema.count
        currentPathLock.withLock { $0 = path }
        counters.files.add(1, ordering: .relaxed)
    }

    private func closeFile(writeEnd: Bool = true) {
        guard let file else { return }
        if writeEnd { try? file.write(contentsOf: ArrowStreamWriter.endOfStream) }
        try? file.close()
        self.file = nil
        let path = currentPath
        closedFiles.append((path, fileSize + (writeEnd ? 8 : 0)))
        currentPathLock.withLock { $0 = "" }
    }

    /// Deletes the oldest closed recordings until they and the open file fit the budget.
    private func enforceBudget() {
        var total = closedFiles.reduce(0) { $0 + $1.size } + fileSize
        while total > settings.budgetBytes, !closedFiles.isEmpty {
            let oldest = closedFiles.removeFirst()
            try? FileManager.default.removeItem(atPath: oldest.path)
            total -= oldest.size
        }
    }
}
