import Foundation
import Models

/// The `[recording]` table: where tick recordings go and how much of the disk they may take.
public struct RecordingConfiguration: Sendable, Equatable {
    /// The folder of the recordings (relative paths: to the configuration file's folder).
    public var directory: String
    /// Record from the start (`mpcctl record on|off` switches it at run time either way).
    public var enabled = false
    /// A file is closed and the next begun at this size.
    public var fileBytes = 64 << 20
    /// The most all recordings in the folder may take: the oldest files go first.
    public var budgetBytes = 1 << 30
    /// Records waiting for the writer beyond this are dropped (and counted), never waited for.
    public var queueTicks = 16_384

    public init(directory: String) { self.directory = directory }

    public static func read(_ table: ConfigTable, base: String) throws(ConfigurationError) -> RecordingConfiguration {
        let directory = try table.string("directory", default: "")
        guard !directory.isEmpty else { throw table.error("directory", "is needed: the folder the recordings go to") }
        var configuration = RecordingConfiguration(directory: DaemonConfiguration.absolutePath(directory.hasPrefix("/") ? directory : (base as NSString).appendingPathComponent(directory)))
        configuration.enabled = try table.bool("enabled", default: false)
        configuration.fileBytes = Int(try table.number("file_mb", default: 64, .closed(0.01, 1_048_576)) * 1_048_576)
        configuration.budgetBytes = Int(try table.number("budget_mb", default: 1024, .closed(0.01, 1_073_741_824)) * 1_048_576)
        guard configuration.budgetBytes >= 2 * configuration.fileBytes else {
            throw table.error("budget_mb", "must hold at least two files of file_mb (\(Double(configuration.fileBytes) / 1_048_576) MiB each): the one being written and the last one closed")
        }
        configuration.queueTicks = try table.integer("queue_ticks", default: 16_384, min: 16, max: 1 << 22)
        try table.finish()
        return configuration
    }
}
