/// One state at a time through the batched kernels (lane 0 of a padded scratch batch), so a
/// simulation, a test or the daemon's state advance runs exactly the code the planner runs.
/// Allocates per call: not for hot loops.
extension ControlTask {
    /// The running cost of `action` in `state` and the next state.
    public func step(state: [Float], action: [Float]) -> (next: [Float], cost: Float) {
        let n = dynamics.stateDimension, m = dynamics.actionDimension
        precondition(state.count == n && action.count == m, "state or action of the wrong size")
        var states = [Float](repeating: 0, count: n * laneWidth)
        var actions = [Float](repeating: 0, count: m * laneWidth)
        var costs = [Float](repeating: 0, count: laneWidth)
        for i in 0..<n { states[i * laneWidth] = state[i] }
        for i in 0..<m { actions[i * laneWidth] = action[i] }
        states.withUnsafeMutableBufferPointer { s in
            actions.withUnsafeMutableBufferPointer { a in
                costs.withUnsafeMutableBufferPointer { c in
                    let stateView = BatchView(base: s.baseAddress!, stride: laneWidth, lanes: laneWidth)
                    let actionView = BatchView(base: a.baseAddress!, stride: laneWidth, lanes: laneWidth)
                    cost.addRunningCost(states: stateView, actions: actionView, into: c.baseAddress!)
                    dynamics.step(states: stateView, actions: actionView)
                }
            }
        }
        return ((0..<n).map { states[$0 * laneWidth] }, costs[0])
    }

    /// The terminal cost of one state.
    public func terminalCost(state: [Float]) -> Float {
        let n = dynamics.stateDimension
        var states = [Float](repeating: 0, count: n * laneWidth)
        var costs = [Float](repeating: 0, count: laneWidth)
        for i in 0..<n { states[i * laneWidth] = state[i] }
        states.withUnsafeMutableBufferPointer { s in
            costs.withUnsafeMutableBufferPointer { c in
                cost.addTerminalCost(states: BatchView(base: s.baseAddress!, stride: laneWidth, lanes: laneWidth), into: c.baseAddress!)
            }
        }
        return costs[0]
    }
}
