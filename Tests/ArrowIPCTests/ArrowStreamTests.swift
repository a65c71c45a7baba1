import ArrowIPC
import Foundation
import Testing

/// The stream format against itself (every type, several batches, a cut-short stream, malformed
/// input). That other readers open it is checked with pyarrow (clients/python/tests/test_recording.py).
@Suite struct ArrowStreamTests {
    static let fields = [
        ArrowField("time", .timestamp), ArrowField("session", .uint64), ArrowField("peer", .utf8),
        ArrowField("flags", .uint32), ArrowField("shift", .int32), ArrowField("version", .int64),
        ArrowField("cost", .float64), ArrowField("age", .float32), ArrowField("state", .float32List(size: 3)),
    ]

    static func batch(rows: Int, first: Int) -> [ArrowColumn] {
        let r = (first..<(first + rows))
        return [
            .int64(r.map { 1_700_000_000_000_000 + Int64($0) }), .uint64(r.map { UInt64($0) * 0x1_0000_0001 }),
            .utf8(r.map { $0 % 3 == 0 ? "" : "robot-\($0)-é" }), .uint32(r.map { UInt32($0 % 7) }), .int32(r.map { -Int32($0) }),
            .int64(r.map { Int64($0) - 5 }), .float64(r.map { Double($0) / 3 }), .float32(r.map { Float($0) * 0.1 }),
            .float32(r.flatMap { i in [Float(i), -Float(i), i == 1 ? .nan : 1 / Float(i + 1)] }),
        ]
    }

    static let schema = ArrowStreamWriter.schema(fields, metadata: [("configuration", "[task]\nname = \"pendulum\"\n"), ("mpcd_version", "0.1.0")])

    static func stream(batches: [Int]) throws -> [UInt8] {
        var bytes = schema
        var first = 0
        for rows in batches {
            bytes += try ArrowStreamWriter.recordBatch(fields, batch(rows: rows, first: first), rows: rows)
            first += rows
        }
        return bytes + ArrowStreamWriter.endOfStream
    }

    @Test func everyTypeComesBackAsWritten() throws {
        let bytes = try Self.stream(batches: [5, 1, 0, 17])
        if let path = ProcessInfo.processInfo.environment["MPCD_ARROW_SAMPLE"] {
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        }
        let reader = try ArrowStreamReader(bytes)
        #expect(reader.fields == Self.fields)
        #expect(reader.metadata == ["configuration": "[task]\nname = \"pendulum\"\n", "mpcd_version": "0.1.0"])
        #expect(!reader.truncated)
        #expect(reader.rowCount == 23)
        let expected = Self.batch(rows: 23, first: 0)
        for (index, field) in Self.fields.enumerated() {
            let column = try #require(reader.column(field.name))
            if case let .float32(values) = column, case let .float32(wanted) = expected[index] {
                #expect(values.map(\.bitPattern) == wanted.map(\.bitPattern), "\(field.name)")
            } else {
                #expect(column == expected[index], "\(field.name)")
            }
        }
    }

    @Test func aStreamCutShortKeepsItsCompleteBatches() throws {
        let whole = try Self.stream(batches: [4, 6])
        let schemaAndFirst = Self.schema.count
            + (try ArrowStreamWriter.recordBatch(Self.fields, Self.batch(rows: 4, first: 0), rows: 4)).count
        for cut in [whole.count - 8, whole.count - 9, schemaAndFirst + 3, schemaAndFirst + 40] {
            let reader = try ArrowStreamReader(Array(whole[0..<cut]))
            #expect(reader.truncated)
            #expect(reader.rowCount == (cut >= whole.count - 8 ? 10 : 4), "cut at \(cut)")
        }
    }

    @Test func malformedStreamsAreRefusedWithAReason() throws {
        let whole = try Self.stream(batches: [3])
        var garbage = whole
        garbage[0] = 0
        #expect(throws: ArrowError.self) { try ArrowStreamReader(garbage) }
        // every single-byte corruption of the metadata is either read or refused, never a crash
        for at in stride(from: 8, to: min(whole.count, 600), by: 1) {
            var corrupt = whole
            corrupt[at] ^= 0xA5
            _ = try? ArrowStreamReader(corrupt)
        }
        #expect(throws: ArrowError.self) {
            try ArrowStreamWriter.recordBatch(Self.fields, Self.batch(rows: 2, first: 0), rows: 3)
        }
    }

    /// Recordings joined with cat read as their first stream alone: `mpcd replay` replayed 30 of 90
    /// ticks and said "no difference". Bytes after the end marker are refused by name.
    @Test func bytesAfterTheEndMarkerAreRefused() throws {
        let whole = try Self.stream(batches: [3])
        #expect(try ArrowStreamReader(whole).batches.count == 1)
        #expect(throws: ArrowError.self) { try ArrowStreamReader(whole + whole) }
        #expect(throws: ArrowError.self) { try ArrowStreamReader(whole + [0]) }
    }
}
