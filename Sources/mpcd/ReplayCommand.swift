import ArgumentParser
import Daemon
import Foundation

/// `mpcd replay FILE...`: re-plans a recording and names the first tick that differs.
struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Plan every recorded tick again and report the first tick whose plan differs (docs/recording.md).",
        discussion: """
            Give the files of one configuration in the order they were written (rotated files: oldest first). \
            Exit status: 0 when every recorded plan was replayed and matches bit for bit; 1 when one differs; 2 when \
            none differs but some could not be replayed (a session begun before the first file, rows dropped, a prior \
            learning online); 78 on a file, row or configuration that cannot be read.
            """
    )

    @Argument(help: "Recording files (.arrows), oldest first.") var files: [String]
    @Option(name: .long, help: "Replay with this configuration instead of the recorded one (to see where a change departs).")
    var config: String?
    @Option(name: .long, help: "Write a plot of recorded against replayed actions (SVG).") var plot: String?
    @Flag(name: .long, help: "Load the compiled model plug-in a recorded configuration names (a shared library: only from a recording you trust).")
    var allowPlugin = false

    func run() throws {
        let replay: Replay
        do {
            let replacement = try config.map { try loadConfiguration($0) }
            replay = try Replay(files: files, configuration: replacement, allowPlugin: allowPlugin)
        } catch let error as ExitCode {
            throw error
        } catch {
            FileHandle.standardError.write(Data("mpcd replay: \(error)\n".utf8))
            throw ExitCode(78)
        }
        for file in replay.truncatedFiles { print("note: \(file) ends without its end marker (the daemon stopped uncleanly); its complete batches are replayed") }
        for warning in replay.warnings { print("warning: \(warning)") }
        let bar = ProgressBar(total: Double(max(1, replay.rows.count)))
        let report: Replay.Report
        do {
            report = try replay.run { done, total in bar.show(done: Double(done), label: "replay", detail: "\(done)/\(total) ticks") }
        } catch {
            FileHandle.standardError.write(Data("mpcd replay: \(error)\n".utf8))
            throw ExitCode(78)
        }
        bar.finish()
        print("recording: \(replay.metadata["task"] ?? "?") under \(replay.metadata["configuration_source"] ?? "?") (hash \(replay.metadata["configuration_hash"] ?? "?")), mpcd \(replay.metadata["mpcd_version"] ?? "?")")
        print("replayed \(report.replayed) of \(replay.rows.count) recorded ticks (stale replies are not plans); \(report.identical) identical bit for bit")
        for note in report.notes { print("note: \(note)") }
        if let plot { try Self.writePlot(report.points, firstDifference: report.firstDifference, to: plot) }
        guard let difference = report.firstDifference else {
            if report.complete {
                print("no difference")
                return
            }
            print("no difference in what was replayed, but not everything was (see the notes)")
            throw ExitCode(2)
        }
        let time = Date(timeIntervalSince1970: Double(difference.time) * 1e-6)
        print("first difference: row \(difference.row), session \(difference.session) (\(difference.peer)), tick \(difference.tick), at \(ISO8601DateFormatter().string(from: time)); largest difference \(difference.largest)")
        throw ExitCode(1)
    }

    /// Recorded (line) against replayed (dots) first action, per row, the first difference marked.
    static func writePlot(_ points: [Replay.Point], firstDifference: Replay.Difference?, to path: String) throws {
        let width = 900.0, height = 360.0, margin = 50.0
        let values = points.flatMap { [$0.recorded, $0.replayed] }.filter(\.isFinite).map(Double.init)
        let low = values.min() ?? -1, high = max(values.max() ?? 1, low + 1e-6)
        func x(_ i: Int) -> Double { margin + (width - 2 * margin) * Double(i) / Double(max(1, points.count - 1)) }
        func y(_ v: Float) -> Double { height - margin - (height - 2 * margin) * (Double(v) - low) / (high - low) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"\(margin)\" y=\"20\">first action: recorded (line) and replayed (dots), in the order planned</text>\n"
        svg += String(format: "<text x=\"5\" y=\"%.0f\">%.3g</text><text x=\"5\" y=\"%.0f\">%.3g</text>\n", margin, high, height - margin, low)
        let line = points.indices.filter { points[$0].recorded.isFinite }.map { String(format: "%.1f,%.1f", x($0), y(points[$0].recorded)) }
        svg += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"\(line.joined(separator: " "))\"/>\n"
        let step = max(1, points.count / 400)
        for i in stride(from: 0, to: points.count, by: step) where points[i].replayed.isFinite {
            svg += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"1.8\" fill=\"#ff7f0e\"/>\n", x(i), y(points[i].replayed))
        }
        if let difference = firstDifference, let i = points.firstIndex(where: { $0.session == difference.session && $0.tick == difference.tick }) {
            svg += String(format: "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"red\"/>", x(i), x(i), margin, height - margin)
            svg += String(format: "<text x=\"%.1f\" y=\"%.0f\" fill=\"red\">first difference: session %llu, tick %llu</text>\n", x(i) + 4, margin + 12, difference.session, difference.tick)
        }
        svg += "</svg>\n"
        try svg.write(toFile: path, atomically: true, encoding: .utf8)
    }
}
