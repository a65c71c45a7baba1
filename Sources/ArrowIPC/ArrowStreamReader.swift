/// Reads a stream `ArrowStreamWriter` wrote (the same subset of Arrow): the schema, its metadata,
/// and every complete record batch. A stream cut short (a crash while writing) yields the batches
/// before the cut and says so in `truncated`.
public struct ArrowStreamReader {
    public private(set) var fields: [ArrowField] = []
    public private(set) var metadata: [String: String] = [:]
    /// Each batch: its row count and its columns in the schema's order.
    public private(set) var batches: [(rows: Int, columns: [ArrowColumn])] = []
    /// Whether the stream ended without its end marker (the last batch may be missing).
    public private(set) var truncated = false

    public init(_ bytes: [UInt8]) throws(ArrowError) {
        var at = 0
        var sawSchema = false
        while true {
            guard at + 8 <= bytes.count else {
                truncated = true
                return
            }
            let length = Int(try read(Int32.self, bytes, at + 4))
            guard try read(UInt32.self, bytes, at) == 0xFFFF_FFFF else { throw ArrowError("no message starts at byte \(at)") }
            if length == 0 {  // the end marker
                // what follows it would be read by nothing: recordings joined with cat replayed
                // their first stream only, and said nothing of the rest
                guard at + 8 == bytes.count else {
                    throw ArrowError("\(bytes.count - at - 8) bytes after the end of the stream at byte \(at): one recording a file (joined with cat? give each file on its own)")
                }
                return
            }
            guard length > 0, length <= bytes.count - at - 8 else {
                truncated = true
                return
            }
            let metadata = Array(bytes[(at + 8)..<(at + 8 + length)])
            at += 8 + length
            do {
                let message = try FlatBufferTable(root: metadata)
                let bodyLength = Int(try message.scalar(3, default: Int64(0)))
                guard bodyLength >= 0, bodyLength <= bytes.count - at else {
                    truncated = true
                    return
                }
                let body = bytes[at..<(at + bodyLength)]
                at += bodyLength
                guard let header = try message.table(2) else { throw ArrowError("a message has no header") }
                switch try message.scalar(1, default: UInt8(0)) {
                case ArrowStreamWriter.schemaHeader:
                    guard !sawSchema else { throw ArrowError("a second schema in one stream") }
                    sawSchema = true
                    try readSchema(header)
                case ArrowStreamWriter.recordBatchHeader:
                    guard sawSchema else { throw ArrowError("a record batch before the schema") }
                    try readBatch(header, body: Array(body))
                case let other:
                    throw ArrowError("message type \(other) is not one mpcd writes")
                }
            } catch let error as ArrowError {
                throw error
            } catch {
                throw ArrowError("malformed metadata: \(error)")
            }
        }
    }

    private mutating func readSchema(_ schema: FlatBufferTable) throws {
        for pair in try schema.tables(2) {
            metadata[try pair.string(0) ?? ""] = try pair.string(1) ?? ""
        }
        for field in try schema.tables(1) {
            let name = try field.string(0) ?? ""
            guard let type = try field.table(3) else { throw ArrowError("field \(name) has no type") }
            let arrowType: ArrowType
            switch try field.scalar(2, default: UInt8(0)) {
            case 2:
                let bits = try type.scalar(0, default: Int32(0)), signed = try type.scalar(1, default: UInt8(0)) != 0
                switch (bits, signed) {
                case (32, true): arrowType = .int32
                case (32, false): arrowType = .uint32
                case (64, true): arrowType = .int64
                case (64, false): arrowType = .uint64
                default: throw ArrowError("field \(name): \(bits)-bit integers are not read")
                }
            case 3:
                switch try type.scalar(0, default: Int16(0)) {
                case 1: arrowType = .float32
                case 2: arrowType = .float64
                default: throw ArrowError("field \(name): half floats are not read")
                }
            case 5: arrowType = .utf8
            case 10:
                guard try type.scalar(0, default: Int16(0)) == 2 else { throw ArrowError("field \(name): only microsecond timestamps are read") }
                arrowType = .timestamp
            case 16:
                let size = Int(try type.scalar(0, default: Int32(0)))
                guard size >= 0 else { throw ArrowError("field \(name): a list of \(size)") }
                arrowType = .float32List(size: size)
            case let other: throw ArrowError("field \(name): type \(other) is not read")
            }
            fields.append(ArrowField(name, arrowType))
        }
    }

    private mutating func readBatch(_ batch: FlatBufferTable, body: [UInt8]) throws {
        let rows = Int(try batch.scalar(0, default: Int64(0)))
        let buffers = try batch.int64Pairs(2)
        guard rows >= 0, rows <= Int(Int32.max) else { throw ArrowError("a batch of \(rows) rows") }
        var next = 0, end: Int64 = 0
        // buffers in order and apart: what is decoded is never more than the batch's own bytes
        func buffer() throws -> ArraySlice<UInt8> {
            guard next < buffers.count else { throw ArrowError("a batch has too few buffers") }
            let (offset, length) = buffers[next]
            next += 1
            guard offset >= end, length >= 0, offset <= Int64(body.count) - length else { throw ArrowError("a buffer lies outside its batch or over another") }
            end = offset + length
            return body[Int(offset)..<Int(offset + length)]
        }
        var columns: [ArrowColumn] = []
        for field in fields {
            _ = try buffer()  // validity: mpcd writes no nulls
            let column: ArrowColumn
            switch field.type {
            case .int32: column = .int32(try values(try buffer(), rows, field))
            case .uint32: column = .uint32(try values(try buffer(), rows, field))
            case .int64, .timestamp: column = .int64(try values(try buffer(), rows, field))
            case .uint64: column = .uint64(try values(try buffer(), rows, field))
            case .float32: column = .float32((try values(try buffer(), rows, field) as [UInt32]).map(Float.init(bitPattern:)))
            case .float64: column = .float64((try values(try buffer(), rows, field) as [UInt64]).map(Double.init(bitPattern:)))
            case let .float32List(size):
                _ = try buffer()  // the child's validity
                let (count, overflow) = rows.multipliedReportingOverflow(by: size)
                guard !overflow else { throw ArrowError("field \(field.name): \(rows) rows of \(size) values") }
                column = .float32((try values(try buffer(), count, field) as [UInt32]).map(Float.init(bitPattern:)))
            case .utf8:
                let offsets: [Int32] = try values(try buffer(), rows + 1, field)
                let text = try buffer()
                var strings: [String] = []
                for row in 0..<rows {
                    let start = Int(offsets[row]), end = Int(offsets[row + 1])
                    guard start >= 0, start <= end, end <= text.count else { throw ArrowError("field \(field.name): offsets outside the text") }
                    strings.append(String(decoding: text[(text.startIndex + start)..<(text.startIndex + end)], as: UTF8.self))
                }
                column = .utf8(strings)
            }
            columns.append(column)
        }
        batches.append((rows, columns))
    }

    private func values<T: FixedWidthInteger>(_ buffer: ArraySlice<UInt8>, _ count: Int, _ field: ArrowField) throws -> [T] {
        let size = MemoryLayout<T>.size
        let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
        guard !overflow, count >= 0, buffer.count >= bytes else { throw ArrowError("field \(field.name): \(buffer.count) bytes for \(count) values") }
        return (0..<count).map { i in
            var value: T = 0
            for b in (0..<size).reversed() { value = value << 8 | T(buffer[buffer.startIndex + i * size + b]) }
            return value
        }
    }

    /// A column of every batch together, by field name.
    public func column(_ name: String) -> ArrowColumn? {
        guard let index = fields.firstIndex(where: { $0.name == name }) else { return nil }
        return batches.map(\.columns[index]).reduce(nil) { (joined: ArrowColumn?, next: ArrowColumn) in joined.map { $0.appending(next) } ?? next }
    }

    public var rowCount: Int { batches.reduce(0) { $0 + $1.rows } }
}

private func read<T: FixedWidthInteger>(_: T.Type, _ bytes: [UInt8], _ offset: Int) throws(ArrowError) -> T {
    do { return try FlatBufferTable.read(T.self, bytes, at: offset) } catch { throw ArrowError("the stream ends inside a message header") }
}

extension ArrowColumn {
    func appending(_ other: ArrowColumn) -> ArrowColumn {
        switch (self, other) {
        case let (.int32(a), .int32(b)): .int32(a + b)
        case let (.uint32(a), .uint32(b)): .uint32(a + b)
        case let (.int64(a), .int64(b)): .int64(a + b)
        case let (.uint64(a), .uint64(b)): .uint64(a + b)
        case let (.float32(a), .float32(b)): .float32(a + b)
        case let (.float64(a), .float64(b)): .float64(a + b)
        case let (.utf8(a), .utf8(b)): .utf8(a + b)
        default: self
        }
    }
}
