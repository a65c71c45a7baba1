import Daemon
import Foundation
import Testing

/// Every action that passes the guard is finite, within bounds and within the slew limit, whatever
/// the planner proposed: random plans and adversarial ones (NaN, infinities, huge jumps, wrong sizes).
@Suite struct ActionSafetyTests {
    let safety = ActionSafety(lower: [-2, 0], upper: [2, 1], maxStep: [0.1, 0.05])

    func check(_ action: [Float], previous: [Float]?) {
        #expect(action.count == 2)
        for i in 0..<2 {
            #expect(action[i].isFinite)
            #expect(action[i] >= safety.lower[i] && action[i] <= safety.upper[i])
            if let previous { #expect(abs(action[i] - previous[i]) <= safety.maxStep![i] * 1.000001) }
        }
    }

    @Test func randomAndAdversarialProposalsAlwaysComeOutSafe() {
        var generator = SystemRandomNumberGenerator()
        let specials: [Float] = [.nan, .infinity, -.infinity, 1e30, -1e30, .greatestFiniteMagnitude, 0, -0.0, .leastNonzeroMagnitude]
        var previous: [Float]? = nil
        for step in 0..<20_000 {
            var proposed: [Float] = (0..<2).map { _ in Float.random(in: -5...5, using: &generator) }
            if step % 3 == 0 { proposed[Int.random(in: 0...1, using: &generator)] = specials.randomElement(using: &generator)! }
            if step % 97 == 0 { proposed = [1] }  // wrong size
            if step % 101 == 0 { proposed = [.nan, .nan] }
            let (action, _) = safety.filter(proposed, previous: previous)
            check(action, previous: previous)
            previous = action
        }
    }

    @Test func plannedSequencesAreLimitedAsAChain() {
        let flat: [Float] = [5, 5, -5, -5, .nan, 0.5, 1, 1]
        let start: [Float] = [0, 0.5]
        let out = safety.filterSequence(flat, previous: start)
        #expect(out.count == flat.count)
        var previous = start
        for t in 0..<4 {
            let action = Array(out[(2 * t)..<(2 * t + 2)])
            check(action, previous: previous)
            previous = action
        }
    }

    @Test func aSafeProposalPassesUnchanged() {
        let (action, limited) = safety.filter([0.05, 0.52], previous: [0, 0.5])
        #expect(action == [0.05, 0.52] && !limited)
        #expect(safety.filter([0.5, 0.5], previous: [0, 0.5]).limited)
        #expect(safety.zero == [0, 0])
    }
}
