import Foundation

/// The safetensors format (what PyTorch users already have): an 8-byte little-endian header
/// length, a JSON header naming each tensor's dtype, shape and byte range, an optional
/// `__metadata__` object of strings, then the raw little-endian data.
public enum SafeTensors {
    public struct Tensor: Equatable, Sendable {
        public var shape: [Int]
        public var values: [Float]

        public init(shape: [Int], values: [Float]) {
            self.shape = shape
            self.values = values
        }
    }

    public struct File: Equatable, Sendable {
        public var metadata: [String: String]
        public var tensors: [String: Tensor]

        public init(metadata: [String: String], tensors: [String: Tensor]) {
            self.metadata = metadata
            self.tensors = tensors
        }
    }

    public struct FormatError: Error, CustomStringConvertible, Equatable {
        public let reason: String
        public var description: String { reason }
    }

    /// Largest JSON header read: a network of a few dozen tensors needs a few KiB, and JSON takes
    /// tens of times its size in memory once parsed.
    public static let maxHeaderBytes = 1 << 20

    /// Reads F32 (and F64, converted) tensors; refuses anything malformed with the reason.
    public static func decode(_ data: Data) throws(FormatError) -> File {
        guard data.count >= 8 else { throw FormatError(reason: "too short for a safetensors file (\(data.count) bytes)") }
        var headerLength: UInt64 = 0
        for i in 0..<8 { headerLength |= UInt64(data[data.startIndex + i]) << (8 * UInt64(i)) }
        // (the number itself is not repeated: it is the first bytes of whatever file was named)
        guard headerLength <= UInt64(data.count - 8) else { throw FormatError(reason: "not a safetensors file: its header length does not fit the file") }
        guard headerLength <= UInt64(maxHeaderBytes) else {
            throw FormatError(reason: "the header is over \(maxHeaderBytes) bytes; mpcd's networks have a few tensors")
        }
        let headerStart = data.startIndex + 8, dataStart = headerStart + Int(headerLength)
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: data[headerStart..<dataStart])
        } catch {
            throw FormatError(reason: "the header is not JSON")
        }
        guard let header = json as? [String: Any] else { throw FormatError(reason: "the header is not a JSON object") }
        var file = File(metadata: [:], tensors: [:])
        // tensors may not share bytes (the format lays them end to end), so their sizes add up to
        // at most the data section: a few tensors cannot claim the same gigabyte over and over
        var claimed = 0
        for (name, entry) in header {
            if name == "__metadata__" {
                guard let metadata = entry as? [String: String] else { throw FormatError(reason: "__metadata__ must map strings to strings") }
                file.metadata = metadata
                continue
            }
            guard let info = entry as? [String: Any], let dtype = info["dtype"] as? String,
                  let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2 else {
                throw FormatError(reason: "tensor \(name): needs dtype, shape and data_offsets")
            }
            let width: Int
            switch dtype {
            case "F32": width = 4
            case "F64": width = 8
            default: throw FormatError(reason: "tensor \(name): dtype \(dtype) is not supported (F32 or F64)")
            }
            // every size and offset comes from the file: checked arithmetic, no trap, no huge allocation
            var count = 1
            for extent in shape {
                let (product, overflow) = count.multipliedReportingOverflow(by: extent)
                guard extent >= 0, !overflow else { throw FormatError(reason: "tensor \(name): shape \(shape) is not a valid size") }
                count = product
            }
            let (byteCount, tooMany) = count.multipliedReportingOverflow(by: width)
            let available = data.endIndex - dataStart
            guard !tooMany, offsets[0] >= 0, offsets[1] >= offsets[0], offsets[1] <= available, offsets[1] - offsets[0] == byteCount else {
                throw FormatError(reason: "tensor \(name): data_offsets \(offsets) do not fit shape \(shape) of \(dtype) in the file")
            }
            claimed += byteCount
            guard claimed <= available else { throw FormatError(reason: "tensor \(name): the tensors claim more bytes than the file holds") }
            var values = [Float](repeating: 0, count: count)
            let start = dataStart + offsets[0]
            data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
                let base = raw.baseAddress! + (start - data.startIndex)
                values.withUnsafeMutableBufferPointer { out in
                    for i in 0..<count {
                        if width == 4 {
                            out[i] = Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: i &* 4, as: UInt32.self)))
                        } else {
                            out[i] = Float(Double(bitPattern: UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self))))
                        }
                    }
                }
            }
            file.tensors[name] = Tensor(shape: shape, values: values)
        }
        return file
    }

    /// Writes F32 tensors in name order.
    public static func encode(_ file: File) -> Data {
        var header: [String: Any] = [:]
        if !file.metadata.isEmpty { header["__metadata__"] = file.metadata }
        var offset = 0
        let names = file.tensors.keys.sorted()
        for name in names {
            let t = file.tensors[name]!
            header[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + 4 * t.values.count]] as [String: Any]
            offset += 4 * t.values.count
        }
        var json = (try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])) ?? Data("{}".utf8)
        while json.count % 8 != 0 { json.append(0x20) }  // pad so the data is aligned
        var out = Data()
        var length = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(json)
        for name in names {
            for v in file.tensors[name]!.values {
                var bits = v.bitPattern.littleEndian
                withUnsafeBytes(of: &bits) { out.append(contentsOf: $0) }
            }
        }
        return out
    }
}
