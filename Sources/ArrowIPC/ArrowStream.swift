/// Arrow's IPC streaming format (https://arrow.apache.org/docs/format/Columnar.html), the subset
/// mpcd's recordings use: flat columns of integers, floats, UTC microsecond timestamps and UTF-8
/// text, and fixed-size lists of floats; no nulls, no compression, no dictionaries. Any Arrow
/// reader opens the result (pyarrow.ipc.open_stream, polars, DuckDB). A stream is a schema message,
/// record batches, and an end marker; a reader stops cleanly at a batch cut short by a crash.

/// A column's type.
public enum ArrowType: Equatable, Sendable {
    case int32, uint32, int64, uint64, float32, float64
    /// Microseconds since the Unix epoch, UTC (stored as Int64; microseconds, not nanoseconds, so
    /// that every reader turns it into its language's date and time without a loss).
    case timestamp
    case utf8
    /// `size` Float values per row.
    case float32List(size: Int)
}

public struct ArrowField: Equatable, Sendable {
    public var name: String
    public var type: ArrowType

    public init(_ name: String, _ type: ArrowType) {
        self.name = name
        self.type = type
    }
}

/// One column's values for a batch; a `float32List` column holds rows x size values, row by row.
public enum ArrowColumn: Equatable, Sendable {
    case int32([Int32]), uint32([UInt32]), int64([Int64]), uint64([UInt64])
    case float32([Float]), float64([Double])
    case utf8([String])
}

public struct ArrowError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Encodes a stream's messages.
public enum ArrowStreamWriter {
    /// What every stream ends with.
    public static let endOfStream: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]

    // Message.fbs: MetadataVersion V5, and the header union's members.
    static let version: Int16 = 4
    static let schemaHeader: UInt8 = 1
    static let recordBatchHeader: UInt8 = 3

    /// The schema message: the fields, and key-value metadata (configuration, versions).
    public static func schema(_ fields: [ArrowField], metadata: [(key: String, value: String)]) -> [UInt8] {
        var builder = FlatBufferBuilder()
        let fieldTables = fields.map { field(&builder, $0) }
        let fieldVector = builder.vector(ofOffsets: fieldTables)
        let pairs = metadata.map { keyValue(&builder, $0.key, $0.value) }
        let metadataVector = builder.vector(ofOffsets: pairs)
        builder.startTable(fields: 3)
        builder.add(1, offsetTo: fieldVector)
        builder.add(2, offsetTo: metadataVector)
        // slot 0, endianness: Little, the default
        let schema = builder.endTable()
        return message(&builder, header: schemaHeader, table: schema, bodyLength: 0)
    }

    /// One record batch of `rows` rows; the columns in the schema's order and types.
    public static func recordBatch(_ fields: [ArrowField], _ columns: [ArrowColumn], rows: Int) throws(ArrowError) -> [UInt8] {
        guard fields.count == columns.count else { throw ArrowError("\(columns.count) columns for \(fields.count) fields") }
        var nodes: [(Int64, Int64)] = [], buffers: [(Int64, Int64)] = [], body: [UInt8] = []
        func append(_ bytes: [UInt8]) {
            buffers.append((Int64(body.count), Int64(bytes.count)))
            body += bytes
            body += [UInt8](repeating: 0, count: (-body.count) & 7)
        }
        for (field, column) in zip(fields, columns) {
            let values = try checked(field, column, rows: rows)
            nodes.append((Int64(rows), 0))
            append([])  // validity: none (no nulls)
            switch column {
            case let .utf8(strings):
                var offsets: [Int32] = [0], text: [UInt8] = []
                for string in strings {
                    text += string.utf8
                    guard text.count <= Int(Int32.max) else { throw ArrowError("column \(field.name): more than 2 GiB of text in one batch") }
                    offsets.append(Int32(text.count))
                }
                append(bytesOf(offsets))
                append(text)
            default:
                if case .float32List = field.type {
                    // the list's own validity above; its child holds the values
                    nodes.append((Int64(values), 0))
                    append([])
                }
                append(column.littleEndianBytes)
            }
        }
        var builder = FlatBufferBuilder()
        let bufferVector = builder.vector(ofInt64Pairs: buffers)
        let nodeVector = builder.vector(ofInt64Pairs: nodes)
        builder.startTable(fields: 3)
        builder.add(0, Int64(rows))
        builder.add(1, offsetTo: nodeVector)
        builder.add(2, offsetTo: bufferVector)
        let batch = builder.endTable()
        return message(&builder, header: recordBatchHeader, table: batch, bodyLength: body.count) + body
    }

    /// The values a column must hold, checked against its field and the row count.
    static func checked(_ field: ArrowField, _ column: ArrowColumn, rows: Int) throws(ArrowError) -> Int {
        let expected: Int
        switch (field.type, column) {
        case (.int32, .int32), (.uint32, .uint32), (.int64, .int64), (.timestamp, .int64), (.uint64, .uint64),
             (.float32, .float32), (.float64, .float64), (.utf8, .utf8):
            expected = rows
        case let (.float32List(size), .float32):
            expected = rows * size
        default:
            throw ArrowError("column \(field.name) is not of its field's type \(field.type)")
        }
        guard column.count == expected else { throw ArrowError("column \(field.name) has \(column.count) values, not \(expected)") }
        return expected
    }

    private static func message(_ builder: inout FlatBufferBuilder, header type: UInt8, table: Int, bodyLength: Int) -> [UInt8] {
        builder.startTable(fields: 4)
        builder.add(3, Int64(bodyLength))
        builder.add(2, offsetTo: table)
        builder.add(0, version)
        builder.add(1, type)
        let root = builder.endTable()
        var metadata = builder.finish(root: root)
        metadata += [UInt8](repeating: 0, count: (-metadata.count) & 7)
        return [0xFF, 0xFF, 0xFF, 0xFF] + bytesOf([Int32(metadata.count)]) + metadata
    }

    private static func keyValue(_ builder: inout FlatBufferBuilder, _ key: String, _ value: String) -> Int {
        let keyString = builder.string(key), valueString = builder.string(value)
        builder.startTable(fields: 2)
        builder.add(0, offsetTo: keyString)
        builder.add(1, offsetTo: valueString)
        return builder.endTable()
    }

    /// Schema.fbs's Field: name, nullable (false), the type union, children.
    private static func field(_ builder: inout FlatBufferBuilder, _ field: ArrowField) -> Int {
        var children: [Int] = []
        if case .float32List = field.type { children = [Self.field(&builder, ArrowField("item", .float32))] }
        let childVector = builder.vector(ofOffsets: children)
        let (typeCode, typeTable) = type(&builder, field.type)
        let name = builder.string(field.name)
        builder.startTable(fields: 6)
        builder.add(0, offsetTo: name)
        builder.add(3, offsetTo: typeTable)
        builder.add(5, offsetTo: childVector)
        builder.add(2, typeCode)
        builder.add(1, UInt8(0))
        return builder.endTable()
    }

    /// The Type union's member and its table.
    private static func type(_ builder: inout FlatBufferBuilder, _ type: ArrowType) -> (UInt8, Int) {
        func integer(_ bits: Int32, signed: Bool) -> (UInt8, Int) {
            builder.startTable(fields: 2)
            builder.add(0, bits)
            builder.add(1, UInt8(signed ? 1 : 0))
            return (2, builder.endTable())
        }
        func floating(_ precision: Int16) -> (UInt8, Int) {
            builder.startTable(fields: 1)
            builder.add(0, precision)
            return (3, builder.endTable())
        }
        switch type {
        case .int32: return integer(32, signed: true)
        case .uint32: return integer(32, signed: false)
        case .int64: return integer(64, signed: true)
        case .uint64: return integer(64, signed: false)
        case .float32: return floating(1)
        case .float64: return floating(2)
        case .timestamp:
            let zone = builder.string("UTC")
            builder.startTable(fields: 2)
            builder.add(1, offsetTo: zone)
            builder.add(0, Int16(2))  // microseconds
            return (10, builder.endTable())
        case .utf8:
            builder.startTable(fields: 0)
            return (5, builder.endTable())
        case let .float32List(size):
            builder.startTable(fields: 1)
            builder.add(0, Int32(size))
            return (16, builder.endTable())
        }
    }
}

func bytesOf<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    // a little-endian machine (x86-64, arm64) copies the values as they are in memory
    if 1.littleEndian == 1 { return values.withUnsafeBytes { Array($0) } }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(values.count * MemoryLayout<T>.size)
    for value in values { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
    return bytes
}

extension ArrowColumn {
    var count: Int {
        switch self {
        case let .int32(v): v.count
        case let .uint32(v): v.count
        case let .int64(v): v.count
        case let .uint64(v): v.count
        case let .float32(v): v.count
        case let .float64(v): v.count
        case let .utf8(v): v.count
        }
    }

    var littleEndianBytes: [UInt8] {
        switch self {
        case let .int32(v): bytesOf(v)
        case let .uint32(v): bytesOf(v)
        case let .int64(v): bytesOf(v)
        case let .uint64(v): bytesOf(v)
        case let .float32(v): bytesOf(v.map(\.bitPattern))
        case let .float64(v): bytesOf(v.map(\.bitPattern))
        case .utf8: []
        }
    }
}
