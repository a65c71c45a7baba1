import Daemon
import Models
import Testing

/// The adaptive-iteration rule on its own: gains fed in by hand, the target read back.
@Suite struct AdaptiveIterationsTests {
    func rule(gapScale: Double? = nil, minIterations: Int = 0, patience: Int = 3, probeEvery: Int = 4, maximum: Int = 2) throws -> AdaptiveIterations {
        var settings = PriorConfiguration(file: "test", network: AmortisedNetwork(kind: .policy, task: try TaskRegistry.make(name: "pendulum"), hidden: [4]))
        settings.adaptive = true
        settings.minIterations = minIterations
        settings.patience = patience
        settings.probeEvery = probeEvery
        settings.gapScale = gapScale
        return AdaptiveIterations(settings: settings, maximum: maximum, temperature: 0.5)
    }

    /// At a balancing task's equilibrium the costs are near zero: a gain of a thousandth of a cost
    /// unit is 50% of a start cost of 0.002, which the old rule (gain / |start cost|) read as a
    /// large gap and answered with more iterations. On the λ scale it is small.
    @Test func aTinyGainNearZeroCostIsSmall() throws {
        var adaptive = try rule()
        let gain = adaptive.relativeGain(startCost: 0.002, planCost: 0.001)
        #expect(gain < 0.01)
        #expect(gain.isFinite && adaptive.relativeGain(startCost: 0, planCost: 0) == 0)
        #expect(adaptive.lastGain.isNaN)  // nothing measured yet
        for _ in 0..<6 { adaptive.record(startCost: 0.002, planCost: 0.001) }
        #expect(adaptive.lastGain == gain)
        #expect(adaptive.target == 0)  // two drops after patience 3 each, never a rise
    }

    @Test func aLargeGainAddsAnIterationAtOnceAndSmallOnesDropOneAfterPatience() throws {
        var adaptive = try rule(minIterations: 1)
        #expect(adaptive.target == 2)
        for _ in 0..<2 { adaptive.record(startCost: 100, planCost: 100) }
        #expect(adaptive.target == 2)  // patience not yet spent
        adaptive.record(startCost: 100, planCost: 100)
        #expect(adaptive.target == 1)
        for _ in 0..<10 { adaptive.record(startCost: 100, planCost: 100) }
        #expect(adaptive.target == 1)  // min_iterations holds
        adaptive.record(startCost: 100, planCost: 50)  // a 50% gain
        #expect(adaptive.target == 2)
        adaptive.record(startCost: 100, planCost: 50)
        #expect(adaptive.target == 2)  // never above the configured iterations
    }

    @Test func theScaleIsTheGapScaleWhenSet() throws {
        let adaptive = try rule(gapScale: 10)
        #expect(abs(adaptive.relativeGain(startCost: 10, planCost: 8) - 0.1) < 1e-9)
        #expect(abs(try rule().relativeGain(startCost: 10, planCost: 8) - 2 / 10.5) < 1e-6)
    }

    @Test func atZeroIterationsOneProbeRunsEveryProbeEveryTicks() throws {
        var adaptive = try rule(patience: 1, probeEvery: 4)
        for _ in 0..<2 { adaptive.record(startCost: 1, planCost: 1) }
        #expect(adaptive.target == 0)
        #expect((0..<8).map { _ in adaptive.next() } == [0, 0, 0, 1, 0, 0, 0, 1])
    }

    /// iterations = 0 with an adaptive prior: the policy alone, every tick, no probe iterations.
    @Test func aPlannerOfNoIterationsNeverProbes() throws {
        var adaptive = try rule(patience: 1, probeEvery: 2, maximum: 0)
        for _ in 0..<3 { adaptive.record(startCost: 1, planCost: 1) }
        #expect((0..<8).map { _ in adaptive.next() } == Array(repeating: 0, count: 8))
    }

    @Test func aNonFiniteGainChangesNothing() throws {
        var adaptive = try rule(patience: 1)
        for (start, plan) in [(Float.infinity, Float(1)), (.nan, 1), (1, .infinity), (.infinity, .infinity)] {
            adaptive.record(startCost: start, planCost: plan)
        }
        #expect(adaptive.target == 2)
        #expect(adaptive.lastGain.isNaN)  // a non-finite gain is not reported either
    }

    @Test func aBadGapScaleIsRefusedByName() {
        for value in ["0", "-1", "nan", "inf", "\"big\""] {
            let error = ConfigurationTests().failure("[prior]\nfile = \"embedded:pendulum_policy\"\ngap_scale = \(value)\n")
            #expect(error?.location.contains("prior.gap_scale") == true, "gap_scale = \(value): \(String(describing: error))")
        }
    }
}
