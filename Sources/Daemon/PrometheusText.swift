/// Prometheus's text exposition format (version 0.0.4), written metric by metric.
struct PrometheusText {
    private(set) var text = ""

    /// One metric family: its HELP and TYPE lines, then a sample per label set (`labels` as
    /// `[("code", "malformed")]`; values are escaped here).
    mutating func metric(_ name: String, _ type: String, _ help: String, _ samples: [(labels: [(String, String)], value: Double)]) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        for (labels, value) in samples { text += "\(name)\(Self.labels(labels)) \(Self.number(value))\n" }
    }

    mutating func metric(_ name: String, _ type: String, _ help: String, _ value: Double) {
        metric(name, type, help, [([], value)])
    }

    /// One histogram series, bucket counts cumulative as the format wants them: `counts[i]` is the
    /// number of observations at most `bounds[i]`.
    struct HistogramSeries {
        var labels: [(String, String)]
        var cumulativeCounts: [UInt64]
        var count: UInt64
        var sum: Double
    }

    mutating func histogram(_ name: String, _ help: String, bounds: [Double], _ series: [HistogramSeries]) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        for s in series {
            for (bound, count) in zip(bounds, s.cumulativeCounts) {
                text += "\(name)_bucket\(Self.labels(s.labels + [("le", Self.number(bound))])) \(count)\n"
            }
            text += "\(name)_bucket\(Self.labels(s.labels + [("le", "+Inf")])) \(s.count)\n"
            text += "\(name)_sum\(Self.labels(s.labels)) \(Self.number(s.sum))\n"
            text += "\(name)_count\(Self.labels(s.labels)) \(s.count)\n"
        }
    }

    static func labels(_ labels: [(String, String)]) -> String {
        guard !labels.isEmpty else { return "" }
        return "{" + labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
    }

    /// A label value with backslash, double quote and line feed escaped, as the format requires.
    static func escape(_ value: String) -> String {
        var out = ""
        for c in value {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    /// Integers without a fraction, other values in Swift's shortest round-trip form (5e-05, not
    /// 4.9999999999999996e-05: bounds are computed by division, never by multiplying by 1e-6).
    static func number(_ x: Double) -> String {
        if x.isNaN { return "NaN" }
        if x.isInfinite { return x > 0 ? "+Inf" : "-Inf" }
        return x == x.rounded() && abs(x) < 1e15 ? String(Int64(x)) : String(x)
    }
}
