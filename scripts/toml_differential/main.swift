// Prints, as JSON, what mpcd's TOML parser reads from each file named on the command line (or the
// error): the Swift side of scripts/toml_differential.sh.
import Foundation
func json(_ v: ConfigValue) -> Any {
    switch v {
    case let .integer(i): return ["int": String(i)]
    case let .float(f): return ["float": f.isNaN ? "nan" : (f.isInfinite ? (f > 0 ? "inf" : "-inf") : String(f))]
    case let .bool(b): return b
    case let .string(s): return s
    case let .array(a): return a.map(json)
    case let .table(t): return t.mapValues(json)
    }
}
let files = CommandLine.arguments.dropFirst()
var out: [Any] = []
for f in files {
    let text = try! String(contentsOfFile: f, encoding: .utf8)
    do { out.append(json(.table(try TOMLParser.parse(text)))) } catch { out.append(["error": "\(error)"]) }
}
print(String(data: try! JSONSerialization.data(withJSONObject: out, options: [.sortedKeys]), encoding: .utf8)!)
