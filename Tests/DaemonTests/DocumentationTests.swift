import Daemon
import Foundation
import Models
import Planners
import Testing

/// docs/configuration.md must list every key the readers accept, and no key they reject.
@Suite struct DocumentationTests {
    static let configurationPage: String = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/configuration.md").standardized
        return (try? String(contentsOf: url, encoding: .utf8)) ?? ""
    }()

    /// The keys documented in the table rows of the section that starts with `heading`.
    static func documentedKeys(under heading: String) -> Set<String> {
        let lines = configurationPage.components(separatedBy: "\n")
        guard let start = lines.firstIndex(where: { $0.hasPrefix(heading) }) else { return [] }
        var keys = Set<String>()
        for line in lines[(start + 1)...] {
            if line.hasPrefix("#") && !line.hasPrefix("####") { break }
            if line.hasPrefix("| `"), let end = line.dropFirst(3).firstIndex(of: "`") {
                keys.insert(String(line[line.index(line.startIndex, offsetBy: 3)..<end]))
            }
        }
        return keys
    }

    @Test(arguments: TaskRegistry.builtInNames)
    func everyTaskKeyIsDocumented(task: String) throws {
        let table = ConfigTable([:], path: "task")
        _ = try TaskRegistry.make(name: task, parameters: table)
        #expect(Set(table.knownKeys) == Self.documentedKeys(under: "### `\(task)`"))
    }

    /// The tasks a file defines: their keys, read from a fixture model, or up to the missing library.
    @Test func everyMuJoCoAndPluginKeyIsDocumented() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../ModelsTests/Fixtures/mujoco").standardized.path
        let mujoco = ConfigTable(["model": .string("pendulum_on_a_cart.xml"), "cost": .array([.table(["quantity": .string("ctrl")])])], path: "task")
        _ = try TaskRegistry.make(name: "mujoco", parameters: mujoco, baseDirectory: folder)
        #expect(Set(mujoco.knownKeys) == Self.documentedKeys(under: "### `mujoco`"))
        let plugin = ConfigTable(["library": .string("/nonexistent/libx.so")], path: "task")
        #expect(throws: ConfigurationError.self) { try TaskRegistry.make(name: "plugin", parameters: plugin) }
        #expect(Set(plugin.knownKeys) == Self.documentedKeys(under: "### `plugin`"))
    }

    @Test func everyPlannerKeyIsDocumented() throws {
        let table = ConfigTable([:], path: "planner")
        _ = try PlannerConfiguration(table: table)
        #expect(Set(table.knownKeys) == Self.documentedKeys(under: "## `[planner]`"))
    }

    @Test func everyPriorKeyIsDocumented() throws {
        let table = ConfigTable(["online": .bool(true)], path: "prior")
        let task = try TaskRegistry.make(name: "pendulum")
        _ = try DaemonConfiguration.readPrior(table, task: task, planner: PlannerConfiguration(), source: "x.toml")
        #expect(Set(table.knownKeys) == Self.documentedKeys(under: "## `[prior]`"))
    }

    @Test func everyServerKeyIsDocumented() throws {
        let table = ConfigTable([:], path: "server")
        _ = try DaemonConfiguration.readServer(table, planner: PlannerConfiguration())
        #expect(Set(table.knownKeys) == Self.documentedKeys(under: "## `[server]`"))
    }

    @Test func everyRecordingKeyIsDocumented() throws {
        let table = ConfigTable(["directory": .string("r")], path: "recording")
        _ = try RecordingConfiguration.read(table, base: "/tmp")
        #expect(Set(table.knownKeys) == Self.documentedKeys(under: "## `[recording]`"))
    }
}
