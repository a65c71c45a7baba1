import Foundation
#if canImport(Models)
import Models
#endif

/// The network-file target. The first byte chooses: the bytes as a file, or a safetensors file
/// built from the bytes (a header with metadata, shapes and offsets the fuzzer picks, so that it
/// gets past the JSON). Decoded as a policy, a plan and a value for the pendulum, or refused;
/// never a crash, and never an allocation beyond what the file could hold.
public func fuzzNetworkFile(_ bytes: [UInt8]) {
    guard let mode = bytes.first else { return }
    let data = mode & 1 == 0 ? Data(bytes.dropFirst()) : craftedSafeTensors(Array(bytes.dropFirst()))
    let pendulum = try! TaskRegistry.make(name: "pendulum")
    if let network = try? AmortisedNetwork.decode(data, for: pendulum, path: "fuzz") {
        precondition(network.mlp.parameters.count <= data.count / 4, "a network larger than its file")
    }
    if let value = try? ValueNetwork.decode(data, for: pendulum, path: "fuzz") {
        precondition(value.mlp.parameters.count <= data.count / 4, "a value larger than its file")
    }
}

/// A safetensors file whose header the bytes describe.
func craftedSafeTensors(_ bytes: [UInt8]) -> Data {
    var reader = FuzzValueReader(bytes)
    let numbers: [Int] = [0, 1, 2, 3, 4, 8, 64, -1, 1 << 31, 1 << 32, 1 << 62, Int.max, Int.max - 8, Int.min, 100_000]
    func number() -> Int { reader.byte() & 3 == 0 ? Int(reader.byte()) : numbers[Int(reader.byte()) % numbers.count] }
    let texts = ["1", "3", "4", "0", "-1", "4294967296,4294967296", "100000,100000", "4,4", "", "x", "9223372036854775807", "1e5", "nan"]
    func text() -> String { texts[Int(reader.byte()) % texts.count] }
    var metadata: [String: String] = ["format": "mpcd-network", "task": "pendulum"]
    metadata["kind"] = ["policy", "plan", "value", "other"][Int(reader.byte()) % 4]
    for key in ["inputs", "hidden", "outputs", "horizon", "actions", "value_scale", "discount", "min_value"] where reader.byte() & 3 != 0 {
        metadata[key] = text()
    }
    metadata["activation"] = ["tanh", "relu", "x"][Int(reader.byte()) % 3]
    var header: [String: Any] = ["__metadata__": metadata]
    let names = ["hidden.0.weight", "hidden.0.bias", "mean.weight", "mean.bias", "log_std.weight", "log_std.bias", "hidden.1.weight", "extra"]
    for _ in 0..<(Int(reader.byte()) % 8) {
        let shape = (0..<(Int(reader.byte()) % 3)).map { _ in number() }
        header[names[Int(reader.byte()) % names.count]] = ["dtype": ["F32", "F64", "I8"][Int(reader.byte()) % 3], "shape": shape,
                                                           "data_offsets": [number(), number()]] as [String: Any]
    }
    var json = (try? JSONSerialization.data(withJSONObject: header)) ?? Data("{}".utf8)
    while json.count % 8 != 0 { json.append(0x20) }
    var out = Data()
    var length = UInt64(json.count).littleEndian
    withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
    out.append(json)
    out.append(contentsOf: [UInt8](repeating: 0, count: Int(reader.byte()) * 4))
    return out
}
