import Foundation
import Logging

/// Log lines for systemd's journal when standard error is connected to it: each line starts with
/// its syslog priority, `<3>` for an error to `<7>` for debug (sd-daemon(3)), which journald reads
/// off the stream so that `journalctl -p warning` selects by it; no timestamp (the journal stamps
/// every line itself). One line per message: newlines in a message become spaces, since journald
/// would take a second line as a new message of the default priority.
struct JournalLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// The syslog priority of a level (syslog(3)).
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let own = event.metadata { all.merge(own) { $1 } }
        let fields = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let text = "\(event.message)" + (fields.isEmpty ? "" : " " + fields)
        let line = "<\(Self.priority(event.level))>\(label): \(event.level): " + text.replacingOccurrences(of: "\n", with: " ") + "\n"
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// Whether standard error is the journal's stream: systemd then sets JOURNAL_STREAM to its
    /// device and inode ("DEV:INODE", systemd.exec(5)).
    static var standardErrorIsTheJournal: Bool {
        guard let stream = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] else { return false }
        var status = stat()
        guard fstat(2, &status) == 0 else { return false }
        return stream == "\(status.st_dev):\(status.st_ino)"
    }
}
