import ArgumentParser
import CSystemShims
import ControlProtocol
import Daemon
import Foundation
import Logging
import Models

/// `mpcd`: the model-predictive control daemon.
@main
struct MPCD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mpcd",
        abstract: "Model-predictive control daemon: state observations in over ZeroMQ, actions out.",
        version: mpcdVersion,
        subcommands: [Serve.self, Train.self, ModelCommand.self, ReplayCommand.self],
        defaultSubcommand: Serve.self
    )

    static func main() {
        // first of all: a stray signal during start (a slow configuration, a big prior) must not end it
        ignoreStraySignals()
        MLP.useOneBLASThread()
        main(nil)
    }
}

/// Reads `--config`, or the embedded default; exits 78 (EX_CONFIG) with the reason on an error.
func loadConfiguration(_ path: String?, withPrior: Bool = true) throws -> DaemonConfiguration {
    do {
        return try path.map { try DaemonConfiguration.load(path: $0, withPrior: withPrior) }
            ?? DaemonConfiguration.parse(DaemonConfiguration.embeddedDefault, source: DaemonConfiguration.embeddedSource, withPrior: withPrior)
    } catch {
        FileHandle.standardError.write(Data("mpcd: configuration error: \(printable("\(error)"))\n".utf8))
        throw ExitCode(78)  // EX_CONFIG
    }
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve actions (the default command).",
        discussion: "Without --config it serves the embedded default: Gymnasium's Pendulum-v1 planned with MPPI on tcp://127.0.0.1:5555."
    )

    @Option(name: .long, help: "TOML configuration file (docs/configuration.md).")
    var config: String?

    @Option(name: .long, help: "Override [server] mode: realtime or lockstep.")
    var mode: String?

    @Option(name: .long, help: "Override [server] rate_hz.")
    var rateHz: Double?

    @Option(name: .long, help: "Override [server] endpoints with one endpoint.")
    var endpoint: String?

    @Option(name: .long, help: "Override [control] endpoint: where mpcctl finds this daemon (an ipc:// path).")
    var control: String?

    @Flag(name: .long, help: "Check the configuration, print a summary and exit.")
    var check = false

    @Option(name: .long, help: ArgumentHelp("With --check: whose access to the configuration's files to judge: service (the systemd unit's dynamic user and sandbox; the default for root checking a file in /etc/mpcd) or self.", valueName: "service|self"))
    var checkAs: String?

    @Flag(name: .long, help: "Print the embedded default configuration and exit.")
    var printDefault = false

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func run() throws {
        if printDefault {
            guard config == nil, !check else { throw ValidationError("--print-default prints the embedded default; it takes neither --config nor --check") }
            print(DaemonConfiguration.embeddedDefault)
            try flushStandardOutput()
            return
        }
        // SIGTERM, SIGINT and SIGHUP from the very start: set flags the serving loop reads, so none
        // is lost however early it comes (a SIGTERM before serving stops the daemon as it starts)
        mpcd_install_control_signals()
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let journal = JournalLogHandler.standardErrorIsTheJournal
        LoggingSystem.bootstrap { label in
            // under systemd: priorities the journal reads, no second timestamp
            var handler: any LogHandler = journal ? JournalLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let overrides: ConfigurationOverrides
        do {
            overrides = try ConfigurationOverrides(checkingMode: mode, rateHz: rateHz, endpoint: endpoint, control: control)
        } catch {
            throw ValidationError("\(error)")
        }
        let configuration = overrides.applied(to: try loadConfiguration(config))
        if check {
            // root checking the unit's own configuration folder checks it for the unit
            let isUnitConfiguration = DaemonConfiguration.absolutePath(configuration.source).hasPrefix("/etc/mpcd/")
            let judge = checkAs ?? (geteuid() == 0 && isUnitConfiguration ? "service" : "self")
            guard judge == "service" || judge == "self" else { throw ValidationError("--check-as must be service or self, got \"\(judge)\"") }
            if judge == "service", configuration.source != DaemonConfiguration.embeddedSource {
                let folder = (DaemonConfiguration.absolutePath(configuration.source) as NSString).deletingLastPathComponent
                let problems = ServiceAccessCheck.problems(configuration.filesRead, configurationFolder: folder)
                if !problems.isEmpty {
                    FileHandle.standardError.write(Data(("mpcd: as mpcd.service would run it (a dynamic user, ProtectHome, PrivateTmp; --check-as self judges as you):\n"
                        + problems.map { "  \($0)\n" }.joined()).utf8))
                    throw ExitCode(78)
                }
            }
            print("\(configuration.source): OK (task \(configuration.task.name), \(configuration.planner.likelihood), K=\(configuration.planner.samples), H=\(configuration.planner.horizon), \(configuration.server.mode.rawValue) at \(configuration.rateHz) Hz)")
            if configuration.task.name == "mujoco" { print("  MuJoCo \(MuJoCoModel.version): \(MuJoCoModel.libraryPath)") }
            for note in configuration.notes { print("  note: \(note)") }
            return
        }
        let logger = Logger(label: "mpcd")
        let server: Server
        do {
            server = try Server(configuration: configuration, overrides: overrides, logger: logger)
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        for endpoint in server.boundEndpoints { print("mpcd listening on \(endpoint)") }
        if let metrics = server.metricsServer { print("mpcd metrics on http://\(metrics.address)/metrics") }
        fflush(nil)
        mpcd_report_exit_while_serving(journal ? 1 : 0)
        server.run()
        mpcd_serving_ended()
    }
}

/// Signals whose default action ends or stops the process but that mean nothing to mpcd: a closed
/// pipe on standard error or a socket (EPIPE is handled where it happens), a stray kill -USR1, a
/// timer, a terminal's stop keys, the real-time signals. Only SIGTERM and SIGINT stop the daemon,
/// SIGHUP reloads it (ignored until it serves), and SIGKILL and SIGSTOP cannot be caught.
func ignoreStraySignals() {
    mpcd_ignore_stray_signals()
}

/// Flushes standard output and fails when it could not be written (a full disk, /dev/full, a
/// closed pipe): a configuration or a table cut short must not pass for a whole one.
func flushStandardOutput() throws {
    let error = mpcd_flush_stdout()
    if error != 0 {
        FileHandle.standardError.write(Data("mpcd: cannot write standard output: \(String(cString: strerror(error)))\n".utf8))
        throw ExitCode(74)
    }
}
