import Daemon
import Foundation
import Models
import Testing

@Suite struct EmbeddedNetworkTests {
    /// The policy built into mpcd is the shipped file (scripts/embed_networks.py keeps them equal).
    @Test func theEmbeddedPolicyIsTheShippedFile() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../deploy/networks/pendulum_policy.safetensors").standardized
        #expect(EmbeddedNetworks.data(named: "pendulum_policy") == (try Data(contentsOf: file)))
    }

    @Test func theEmbeddedDefaultRunsTheDistilledPolicy() throws {
        let c = try DaemonConfiguration.parse(DaemonConfiguration.embeddedDefault, source: DaemonConfiguration.embeddedSource)
        let prior = try #require(c.prior)
        #expect(prior.file == "embedded:pendulum_policy")
        #expect(prior.network.kind == .policy && prior.adaptive)
    }

    @Test func everyExampleConfigurationRunsAShippedPolicy() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../deploy/config").standardized
        for name in TaskRegistry.builtInNames {
            let c = try DaemonConfiguration.load(path: folder.appendingPathComponent("\(name).toml").path)
            #expect(c.prior?.network.kind == .policy, "\(name).toml has no policy prior")
        }
    }
}
