import COpenBLAS

/// The shape of a multilayer perceptron with a Gaussian head: `inputs` -> hidden layers ->
/// two linear heads of `outputs` each, a mean and a log-std.
public struct MLPArchitecture: Sendable, Equatable {
    public enum Activation: String, Sendable, CaseIterable {
        case tanh, relu
    }

    public var inputs: Int
    public var hidden: [Int]
    public var outputs: Int
    public var activation: Activation

    public init(inputs: Int, hidden: [Int], outputs: Int, activation: Activation = .tanh) {
        self.inputs = inputs
        self.hidden = hidden
        self.outputs = outputs
        self.activation = activation
    }

    /// (rows, columns) of every weight matrix in order: hidden layers, then the mean and log-std heads.
    public var layerShapes: [(rows: Int, columns: Int)] {
        var shapes: [(Int, Int)] = []
        var width = inputs
        for h in hidden {
            shapes.append((h, width))
            width = h
        }
        shapes.append((outputs, width))
        shapes.append((outputs, width))
        return shapes
    }

    /// Parameters in all: every weight matrix and bias vector.
    public var parameterCount: Int { layerShapes.reduce(0) { $0 + $1.rows * $1.columns + $1.rows } }

    /// Most parameters a network mpcd runs may have (64 MiB of Float): far beyond a network that
    /// answers within a tick, and small enough that a file or a configuration naming a bigger one
    /// is refused before anything is allocated.
    public static let maxParameters = 1 << 24

    /// The parameter count of `inputs` -> `hidden` -> two heads of `outputs`, or nil when a width is
    /// not positive or the count exceeds `maxParameters` (computed without overflowing, whatever
    /// the widths: they may come from a file).
    public static func checkedParameterCount(inputs: Int, hidden: [Int], outputs: Int) -> Int? {
        guard inputs > 0, outputs > 0, hidden.allSatisfy({ $0 > 0 }) else { return nil }
        var total = 0, width = inputs
        for (rows, isHead) in hidden.map({ ($0, false) }) + [(outputs, true), (outputs, true)] {
            let (weights, o1) = rows.multipliedReportingOverflow(by: width)
            let (layer, o2) = weights.addingReportingOverflow(rows)
            let (sum, o3) = total.addingReportingOverflow(layer)
            guard !o1, !o2, !o3, sum <= maxParameters else { return nil }
            total = sum
            if !isHead { width = rows }
        }
        return total
    }
}

/// A multilayer perceptron whose parameters live in one flat buffer (so an optimiser and a
/// weights file see one vector): per layer the weight matrix, row-major [out][in] as PyTorch's
/// `Linear` stores it, then the bias.
public struct MLP: Sendable, Equatable {
    public let architecture: MLPArchitecture
    public var parameters: [Float]
    /// Each layer's shape and where its weights and bias start in `parameters`, worked out once.
    let layers: [Layer]

    struct Layer: Sendable, Equatable {
        let rows: Int, columns: Int, weights: Int, bias: Int
    }

    public init(architecture: MLPArchitecture, parameters: [Float]) {
        precondition(parameters.count == architecture.parameterCount, "parameter count does not match the architecture")
        self.architecture = architecture
        self.parameters = parameters
        var layers: [Layer] = []
        var offset = 0
        for (rows, columns) in architecture.layerShapes {
            layers.append(Layer(rows: rows, columns: columns, weights: offset, bias: offset + rows * columns))
            offset += rows * columns + rows
        }
        self.layers = layers
    }

    /// PyTorch's default `Linear` initialisation: uniform in +-1/sqrt(fan_in), from a seeded stream.
    public init(architecture: MLPArchitecture, seed: UInt64) {
        var state = seed
        var values: [Float] = []
        values.reserveCapacity(architecture.parameterCount)
        for (rows, columns) in architecture.layerShapes {
            let bound = 1 / Float(columns).squareRoot()
            for _ in 0..<(rows * columns + rows) {
                let u = Float(uniformBits(&state) >> 40) / Float(1 << 24)
                values.append((2 * u - 1) * bound)
            }
        }
        self.init(architecture: architecture, parameters: values)
    }

    /// Offsets of every layer's weights and bias in `parameters`.
    public var layerOffsets: [(weights: Int, bias: Int)] { layers.map { ($0.weights, $0.bias) } }
}

private func uniformBits(_ state: inout UInt64) -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// Preallocated buffers for forward (and backward) passes of up to `capacity` rows, so a pass
/// allocates nothing.
public final class MLPWorkspace: @unchecked Sendable {
    public let capacity: Int
    /// The input of every layer and the output of the last hidden layer: activations[0] is the
    /// network's input, activations[l + 1] the output of hidden layer l.
    var activations: [UnsafeMutablePointer<Float>]
    /// Head outputs: raw mean and raw log-std, [capacity][outputs].
    public let rawMean: UnsafeMutablePointer<Float>
    public let rawLogStd: UnsafeMutablePointer<Float>
    // Backward pass scratch: the gradient flowing into each layer's output.
    var deltas: [UnsafeMutablePointer<Float>]
    let headDeltaMean: UnsafeMutablePointer<Float>
    let headDeltaLogStd: UnsafeMutablePointer<Float>

    /// OpenBLAS's own threads, on by default, cost more than they give on these small products
    /// (a few hundred rows of 64) and spin against the planner's threads: one thread, set once.
    static let singleThreadedBLAS: Void = openblas_set_num_threads(1)

    public init(architecture: MLPArchitecture, capacity: Int) {
        _ = Self.singleThreadedBLAS
        self.capacity = capacity
        let widths = [architecture.inputs] + architecture.hidden
        activations = widths.map { UnsafeMutablePointer<Float>.allocate(capacity: $0 * capacity) }
        deltas = widths.map { UnsafeMutablePointer<Float>.allocate(capacity: $0 * capacity) }
        rawMean = .allocate(capacity: architecture.outputs * capacity)
        rawLogStd = .allocate(capacity: architecture.outputs * capacity)
        headDeltaMean = .allocate(capacity: architecture.outputs * capacity)
        headDeltaLogStd = .allocate(capacity: architecture.outputs * capacity)
    }

    deinit {
        (activations + deltas + [rawMean, rawLogStd, headDeltaMean, headDeltaLogStd]).forEach { $0.deallocate() }
    }

    /// Where the caller writes the input rows, [capacity][inputs].
    public var input: UnsafeMutablePointer<Float> { activations[0] }
}

extension MLP {
    /// Runs `rows` input rows (already in `workspace.input`) through the network; the raw head
    /// outputs land in `workspace.rawMean` and `workspace.rawLogStd`. Each layer is one
    /// `cblas_sgemm` into a preallocated buffer.
    public func forward(rows: Int, workspace: MLPWorkspace) {
        precondition(rows <= workspace.capacity)
        let hiddenCount = architecture.hidden.count
        parameters.withUnsafeBufferPointer { p in
            let base = p.baseAddress!
            for l in 0..<hiddenCount {
                let layer = layers[l], output = workspace.activations[l + 1]
                linear(rows: rows, inWidth: layer.columns, out: layer.rows, input: workspace.activations[l],
                       weights: base + layer.weights, bias: base + layer.bias, output: output)
                activate(output, count: rows * layer.rows)
            }
            let last = workspace.activations[hiddenCount]
            let meanHead = layers[hiddenCount], logStdHead = layers[hiddenCount + 1]
            linear(rows: rows, inWidth: meanHead.columns, out: meanHead.rows, input: last, weights: base + meanHead.weights,
                   bias: base + meanHead.bias, output: workspace.rawMean)
            linear(rows: rows, inWidth: logStdHead.columns, out: logStdHead.rows, input: last, weights: base + logStdHead.weights,
                   bias: base + logStdHead.bias, output: workspace.rawLogStd)
        }
    }

    /// output[r][o] = bias[o] + sum_i input[r][i] * weights[o][i]
    @inline(__always)
    func linear(rows: Int, inWidth: Int, out: Int, input: UnsafePointer<Float>, weights: UnsafePointer<Float>,
                bias: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>) {
        if rows == 1 {
            // One row (a prior at tick time): a plain dot product per output beats sgemm's set-up.
            let full = inWidth / laneWidth * laneWidth
            for o in 0..<out {
                let row = weights + o * inWidth
                var acc = Lanes(repeating: 0)
                for i in Swift.stride(from: 0, to: full, by: laneWidth) {
                    acc = VectorMath.multiplyAdd(UnsafeRawPointer(row + i).loadUnaligned(as: Lanes.self),
                                                 UnsafeRawPointer(input + i).loadUnaligned(as: Lanes.self), acc)
                }
                var sum = acc.sum() + bias[o]
                for i in full..<inWidth { sum += row[i] * input[i] }
                output[o] = sum
            }
            return
        }
        for r in 0..<rows { (output + r * out).update(from: bias, count: out) }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(out), Int32(inWidth),
                    1, input, Int32(inWidth), weights, Int32(inWidth), 1, output, Int32(out))
    }

    @inline(__always)
    func activate(_ values: UnsafeMutablePointer<Float>, count: Int) {
        switch architecture.activation {
        case .tanh: VectorMath.tanh(values, count: count)
        case .relu: for i in 0..<count where values[i] < 0 { values[i] = 0 }
        }
    }
}

extension MLP {
    /// OpenBLAS starts its own threads, which spin for a while after start and after each call,
    /// against the planner's threads; every mpcd product is small enough for one. Executables
    /// call this first; building a workspace calls it too.
    public static func useOneBLASThread() { _ = MLPWorkspace.singleThreadedBLAS }

    /// Floats of scratch `forwardLanes` needs.
    public var laneScratchCount: Int { 2 * ([architecture.inputs] + architecture.hidden).max()! * laneWidth }

    /// The mean head's first output for `lanes` inputs stored feature-major (feature i of lane k
    /// at `input[i * lanes + k]`), written to `output[k]`.
    ///
    /// For many rows through narrow layers (a value on all K final states): eight lanes go through
    /// the whole network at once in `scratch`, four output units at a time so the multiply-adds do
    /// not wait on each other. sgemm's packing costs more than the arithmetic at these widths.
    public func forwardLanes(lanes: Int, input: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>,
                             scratch: UnsafeMutablePointer<Float>) {
        precondition(lanes % laneWidth == 0)
        let hiddenCount = architecture.hidden.count, half = laneScratchCount / 2, relu = architecture.activation == .relu
        parameters.withUnsafeBufferPointer { p in
            let base = p.baseAddress!
            for k in Swift.stride(from: 0, to: lanes, by: laneWidth) {
                var from = scratch, to = scratch + half
                for i in 0..<architecture.inputs { from.setLanes(input.lanes(at: i &* lanes &+ k), at: i &* laneWidth) }
                for l in 0..<hiddenCount {
                    let layer = layers[l], columns = layer.columns
                    let weights = base + layer.weights, bias = base + layer.bias
                    if columns <= 4 {
                        // few inputs (the first layer): they stay in registers, one output at a time
                        let zero = Lanes(repeating: 0)
                        let x0 = from.lanes(at: 0), x1 = columns > 1 ? from.lanes(at: laneWidth) : zero
                        let x2 = columns > 2 ? from.lanes(at: 2 &* laneWidth) : zero, x3 = columns > 3 ? from.lanes(at: 3 &* laneWidth) : zero
                        for o in 0..<layer.rows {
                            let row = weights + o &* columns
                            var a = VectorMath.multiplyAdd(Lanes(repeating: row[0]), x0, Lanes(repeating: bias[o]))
                            if columns > 1 { a = VectorMath.multiplyAdd(Lanes(repeating: row[1]), x1, a) }
                            if columns > 2 { a = VectorMath.multiplyAdd(Lanes(repeating: row[2]), x2, a) }
                            if columns > 3 { a = VectorMath.multiplyAdd(Lanes(repeating: row[3]), x3, a) }
                            if relu { a.replace(with: zero, where: a .< zero) } else { a = VectorMath.tanh(a) }
                            to.setLanes(a, at: o &* laneWidth)
                        }
                        swap(&from, &to)
                        continue
                    }
                    var o = 0
                    while o < layer.rows {
                        let n = Swift.min(4, layer.rows - o)
                        let r0 = weights + o &* columns, r1 = weights + Swift.min(o + 1, layer.rows - 1) &* columns
                        let r2 = weights + Swift.min(o + 2, layer.rows - 1) &* columns, r3 = weights + Swift.min(o + 3, layer.rows - 1) &* columns
                        var a0 = Lanes(repeating: bias[o]), a1 = Lanes(repeating: bias[Swift.min(o + 1, layer.rows - 1)])
                        var a2 = Lanes(repeating: bias[Swift.min(o + 2, layer.rows - 1)]), a3 = Lanes(repeating: bias[Swift.min(o + 3, layer.rows - 1)])
                        for i in 0..<columns {
                            let x = from.lanes(at: i &* laneWidth)
                            a0 = VectorMath.multiplyAdd(Lanes(repeating: r0[i]), x, a0)
                            a1 = VectorMath.multiplyAdd(Lanes(repeating: r1[i]), x, a1)
                            a2 = VectorMath.multiplyAdd(Lanes(repeating: r2[i]), x, a2)
                            a3 = VectorMath.multiplyAdd(Lanes(repeating: r3[i]), x, a3)
                        }
                        if relu {
                            let zero = Lanes(repeating: 0)
                            a0.replace(with: zero, where: a0 .< zero)
                            a1.replace(with: zero, where: a1 .< zero)
                            a2.replace(with: zero, where: a2 .< zero)
                            a3.replace(with: zero, where: a3 .< zero)
                        } else {
                            a0 = VectorMath.tanh(a0)
                            a1 = VectorMath.tanh(a1)
                            a2 = VectorMath.tanh(a2)
                            a3 = VectorMath.tanh(a3)
                        }
                        to.setLanes(a0, at: o &* laneWidth)
                        if n > 1 { to.setLanes(a1, at: (o + 1) &* laneWidth) }
                        if n > 2 { to.setLanes(a2, at: (o + 2) &* laneWidth) }
                        if n > 3 { to.setLanes(a3, at: (o + 3) &* laneWidth) }
                        o += 4
                    }
                    swap(&from, &to)
                }
                // the head: four partial sums, so the multiply-adds overlap
                let head = layers[hiddenCount], row = base + head.weights, columns = head.columns
                var h0 = Lanes(repeating: base[head.bias]), h1 = Lanes(repeating: 0), h2 = Lanes(repeating: 0), h3 = Lanes(repeating: 0)
                var i = 0
                while i + 4 <= columns {
                    h0 = VectorMath.multiplyAdd(Lanes(repeating: row[i]), from.lanes(at: i &* laneWidth), h0)
                    h1 = VectorMath.multiplyAdd(Lanes(repeating: row[i + 1]), from.lanes(at: (i + 1) &* laneWidth), h1)
                    h2 = VectorMath.multiplyAdd(Lanes(repeating: row[i + 2]), from.lanes(at: (i + 2) &* laneWidth), h2)
                    h3 = VectorMath.multiplyAdd(Lanes(repeating: row[i + 3]), from.lanes(at: (i + 3) &* laneWidth), h3)
                    i += 4
                }
                while i < columns {
                    h0 = VectorMath.multiplyAdd(Lanes(repeating: row[i]), from.lanes(at: i &* laneWidth), h0)
                    i += 1
                }
                output.setLanes((h0 + h1) + (h2 + h3), at: k)
            }
        }
    }
}
