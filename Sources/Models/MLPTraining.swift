import COpenBLAS
import Foundation

extension AmortisedNetwork {
    /// The mean over `rows` rows of KL(target || q), where q is the network's squashed Gaussian for
    /// the inputs already in `workspace.input`, and its gradient with respect to every parameter
    /// (written to `gradient`, `parameterCount` floats). Plain backpropagation, each matrix
    /// product one `cblas_sgemm`.
    ///
    /// For one output with target N(mu_p, s_p) and q = N(m, s):
    /// KL = log(s / s_p) + (s_p^2 + (mu_p - m)^2) / (2 s^2) - 1/2, so
    /// dKL/dm = (m - mu_p) / s^2 and dKL/ds = 1/s - (s_p^2 + (mu_p - m)^2) / s^3; then
    /// m = centre + half tanh(z) gives dm/dz = half (1 - tanh^2 z), and s = half exp(l) gives
    /// ds/dl = s inside the log-std clamp, 0 outside it.
    public func klLossAndGradient(rows: Int, workspace: MLPWorkspace, targetMean: UnsafePointer<Float>,
                                  targetStd: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>) -> Float {
        mlp.forward(rows: rows, workspace: workspace)
        let a = mlp.architecture, outputs = a.outputs, scale = 1 / Float(rows)
        var loss: Double = 0
        for i in 0..<(rows * outputs) {
            let action = i % actionDimension
            let z = workspace.rawMean[i], rawLogStd = workspace.rawLogStd[i]
            let t = VectorMath.tanh(Lanes(repeating: z))[0]
            let m = centre[action] + halfRange[action] * t
            let clamped = Swift.min(Swift.max(rawLogStd, Self.logStdMin), Self.logStdMax)
            let s = halfRange[action] * Foundation.exp(clamped)
            let mp = targetMean[i], sp = targetStd[i], d = mp - m
            loss += Double(Foundation.log(s / sp) + (sp * sp + d * d) / (2 * s * s) - 0.5)
            let dMean = (m - mp) / (s * s), dStd = 1 / s - (sp * sp + d * d) / (s * s * s)
            workspace.headDeltaMean[i] = scale * dMean * halfRange[action] * (1 - t * t)
            workspace.headDeltaLogStd[i] = rawLogStd == clamped ? scale * dStd * s : 0
        }
        mlp.backward(rows: rows, workspace: workspace, gradient: gradient)
        return Float(loss / Double(rows))
    }
}

extension MLP {
    /// Backpropagates the head deltas in `workspace` (after a `forward` of the same rows) into
    /// `gradient`, `parameterCount` floats.
    func backward(rows: Int, workspace: MLPWorkspace, gradient: UnsafeMutablePointer<Float>) {
        let a = architecture
        let shapes = layers.map { (rows: $0.rows, columns: $0.columns) }, offsets = layers.map { (weights: $0.weights, bias: $0.bias) }
        let hiddenCount = a.hidden.count
        parameters.withUnsafeBufferPointer { p in
            let base = p.baseAddress!
            let last = workspace.activations[hiddenCount], width = shapes[hiddenCount].columns
            let deltaIn = workspace.deltas[hiddenCount]
            // Heads: their weight and bias gradients, and the gradient into the last hidden layer.
            for (head, delta) in [(hiddenCount, workspace.headDeltaMean), (hiddenCount + 1, workspace.headDeltaLogStd)] {
                let out = shapes[head].rows
                weightGradient(rows: rows, out: out, inWidth: width, delta: delta, input: last, into: gradient + offsets[head].weights)
                biasGradient(rows: rows, out: out, delta: delta, into: gradient + offsets[head].bias)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(width), Int32(out), 1, delta, Int32(out),
                            base + offsets[head].weights, Int32(width), head == hiddenCount ? 0 : 1, deltaIn, Int32(width))
            }
            for l in stride(from: hiddenCount - 1, through: 0, by: -1) {
                let (out, inWidth) = shapes[l]
                let output = workspace.activations[l + 1], delta = workspace.deltas[l + 1]
                for i in 0..<(rows * out) {
                    switch a.activation {
                    case .tanh: delta[i] *= 1 - output[i] * output[i]
                    case .relu: if output[i] <= 0 { delta[i] = 0 }
                    }
                }
                weightGradient(rows: rows, out: out, inWidth: inWidth, delta: delta, input: workspace.activations[l], into: gradient + offsets[l].weights)
                biasGradient(rows: rows, out: out, delta: delta, into: gradient + offsets[l].bias)
                if l > 0 {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(inWidth), Int32(out), 1, delta, Int32(out),
                                base + offsets[l].weights, Int32(inWidth), 0, workspace.deltas[l], Int32(inWidth))
                }
            }
        }
    }

    /// dW[o][i] = sum_r delta[r][o] * input[r][i]
    private func weightGradient(rows: Int, out: Int, inWidth: Int, delta: UnsafePointer<Float>, input: UnsafePointer<Float>,
                                into gradient: UnsafeMutablePointer<Float>) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(out), Int32(inWidth), Int32(rows), 1, delta, Int32(out),
                    input, Int32(inWidth), 0, gradient, Int32(inWidth))
    }

    private func biasGradient(rows: Int, out: Int, delta: UnsafePointer<Float>, into gradient: UnsafeMutablePointer<Float>) {
        gradient.update(repeating: 0, count: out)
        for r in 0..<rows {
            for o in 0..<out { gradient[o] += delta[r * out + o] }
        }
    }
}

/// Adam (Kingma and Ba, 2015) over one flat parameter vector.
public struct AdamOptimizer: Sendable, Equatable {
    public var learningRate: Float
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    public private(set) var step = 0
    public private(set) var firstMoment: [Float]
    public private(set) var secondMoment: [Float]

    public init(parameterCount: Int, learningRate: Float) {
        self.learningRate = learningRate
        firstMoment = Array(repeating: 0, count: parameterCount)
        secondMoment = Array(repeating: 0, count: parameterCount)
    }

    /// Restores a saved optimiser (resuming training).
    public init(learningRate: Float, step: Int, firstMoment: [Float], secondMoment: [Float]) {
        self.learningRate = learningRate
        self.step = step
        self.firstMoment = firstMoment
        self.secondMoment = secondMoment
    }

    public mutating func update(_ parameters: inout [Float], gradient: UnsafePointer<Float>) {
        step += 1
        let correction1 = 1 - Foundation.pow(beta1, Float(step)), correction2 = 1 - Foundation.pow(beta2, Float(step))
        let stepSize = learningRate * correction2.squareRoot() / correction1
        for i in parameters.indices {
            let g = gradient[i]
            firstMoment[i] = beta1 * firstMoment[i] + (1 - beta1) * g
            secondMoment[i] = beta2 * secondMoment[i] + (1 - beta2) * g * g
            parameters[i] -= stepSize * firstMoment[i] / (secondMoment[i].squareRoot() + epsilon)
        }
    }
}

extension AdamOptimizer {
    /// Puts the optimiser's state into a training checkpoint (`checkpoint_adam_step` and the
    /// tensors `checkpoint.adam_m`, `checkpoint.adam_v`).
    public func store(in file: inout SafeTensors.File) {
        file.metadata["checkpoint_adam_step"] = String(step)
        file.tensors["checkpoint.adam_m"] = .init(shape: [firstMoment.count], values: firstMoment)
        file.tensors["checkpoint.adam_v"] = .init(shape: [secondMoment.count], values: secondMoment)
    }

    /// Takes the optimiser's state out of a training checkpoint; nil when it is not there.
    public static func take(from file: inout SafeTensors.File, learningRate: Float) -> AdamOptimizer? {
        guard let step = file.metadata.removeValue(forKey: "checkpoint_adam_step").flatMap(Int.init),
              let m = file.tensors.removeValue(forKey: "checkpoint.adam_m"), let v = file.tensors.removeValue(forKey: "checkpoint.adam_v") else { return nil }
        return AdamOptimizer(learningRate: learningRate, step: step, firstMoment: m.values, secondMoment: v.values)
    }
}
