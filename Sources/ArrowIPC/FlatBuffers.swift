/// The few FlatBuffers operations Arrow's IPC metadata needs: a builder that writes back to front
/// (as FlatBuffers' own builders do, so every offset points forward) and a bounds-checked reader.
///
/// The builder keeps the finished tail of the buffer; objects are identified by their distance
/// from its end, which stays valid while more is prepended.
struct FlatBufferBuilder {
    /// The buffer so far: its first byte is the last one written.
    private var bytes: [UInt8] = []
    private var minimumAlignment = 1
    /// Positions (from the end) of the fields of the table being built, by slot.
    private var fieldPositions: [Int] = []
    private var tableStart = 0

    /// Distance from the end of the buffer to what was written last.
    var position: Int { bytes.count }

    private mutating func prepend(_ values: some Collection<UInt8>) {
        bytes.insert(contentsOf: values, at: 0)
    }

    private mutating func prepend<T: FixedWidthInteger>(little value: T) {
        prepend(withUnsafeBytes(of: value.littleEndian) { Array($0) })
    }

    /// Pads so that, once `additional` bytes are written, the buffer is aligned to `size`.
    private mutating func align(_ size: Int, after additional: Int = 0) {
        minimumAlignment = max(minimumAlignment, size)
        let padding = (-(bytes.count + additional)) & (size - 1)
        prepend([UInt8](repeating: 0, count: padding))
    }

    mutating func scalar<T: FixedWidthInteger>(_ value: T) {
        align(MemoryLayout<T>.size)
        prepend(little: value)
    }

    /// An offset to the object at `target`, written here.
    mutating func offset(to target: Int) {
        align(4)
        prepend(little: UInt32(bytes.count + 4 - target))
    }

    mutating func string(_ text: String) -> Int {
        let utf8 = Array(text.utf8)
        align(4, after: utf8.count + 1)
        prepend([0])
        prepend(utf8)
        prepend(little: UInt32(utf8.count))
        return position
    }

    mutating func vector(ofOffsets targets: [Int]) -> Int {
        align(4, after: 4 * targets.count)
        for target in targets.reversed() { offset(to: target) }
        prepend(little: UInt32(targets.count))
        return position
    }

    /// A vector of structs of two little-endian Int64 each (Arrow's FieldNode and Buffer).
    mutating func vector(ofInt64Pairs pairs: [(Int64, Int64)]) -> Int {
        align(4, after: 16 * pairs.count)
        align(8, after: 16 * pairs.count)
        for (first, second) in pairs.reversed() {
            prepend(little: second)
            prepend(little: first)
        }
        prepend(little: UInt32(pairs.count))
        return position
    }

    mutating func startTable(fields: Int) {
        fieldPositions = [Int](repeating: 0, count: fields)
        tableStart = position
    }

    mutating func add<T: FixedWidthInteger>(_ slot: Int, _ value: T) {
        scalar(value)
        fieldPositions[slot] = position
    }

    mutating func add(_ slot: Int, offsetTo target: Int) {
        offset(to: target)
        fieldPositions[slot] = position
    }

    /// Ends the table: its vtable goes just before it. Returns the table's position.
    mutating func endTable() -> Int {
        scalar(Int32(0))  // the table's offset to its vtable, set below
        let table = position
        let used = (fieldPositions.lastIndex { $0 != 0 } ?? -1) + 1
        for slot in (0..<used).reversed() {
            prepend(little: UInt16(fieldPositions[slot] == 0 ? 0 : table - fieldPositions[slot]))
        }
        prepend(little: UInt16(table - tableStart))
        prepend(little: UInt16(4 + 2 * used))
        let vtable = position
        let at = bytes.count - table
        withUnsafeBytes(of: Int32(vtable - table).littleEndian) { bytes.replaceSubrange(at..<(at + 4), with: $0) }
        return table
    }

    /// The finished buffer with `root` as its root table, padded to a multiple of 8 bytes.
    mutating func finish(root: Int) -> [UInt8] {
        align(max(minimumAlignment, 8), after: 4)
        offset(to: root)
        return bytes
    }
}

/// What is wrong with a FlatBuffer being read.
public struct FlatBufferError: Error, CustomStringConvertible {
    public let description: String
}

/// A table in a FlatBuffer, read with every offset checked against the buffer's bounds.
struct FlatBufferTable {
    let bytes: [UInt8]
    let position: Int

    /// The root table of `bytes`.
    init(root bytes: [UInt8]) throws(FlatBufferError) {
        self.bytes = bytes
        position = Int(try Self.read(UInt32.self, bytes, at: 0))
        _ = try vtable()
    }

    private init(_ bytes: [UInt8], at position: Int) {
        self.bytes = bytes
        self.position = position
    }

    static func read<T: FixedWidthInteger>(_: T.Type, _ bytes: [UInt8], at offset: Int) throws(FlatBufferError) -> T {
        let size = MemoryLayout<T>.size
        guard offset >= 0, offset <= bytes.count - size else { throw FlatBufferError(description: "an offset points outside the metadata") }
        var value: T = 0
        for i in (0..<size).reversed() { value = value << 8 | T(bytes[offset + i]) }
        return value
    }

    private func vtable() throws(FlatBufferError) -> (start: Int, size: Int) {
        let start = position - Int(try Self.read(Int32.self, bytes, at: position))
        let size = Int(try Self.read(UInt16.self, bytes, at: start))
        guard size >= 4, size % 2 == 0, start + size <= bytes.count else { throw FlatBufferError(description: "a table's vtable is malformed") }
        return (start, size)
    }

    /// Where field `slot` is stored, or nil when absent (its default applies).
    private func field(_ slot: Int) throws(FlatBufferError) -> Int? {
        let (start, size) = try vtable()
        guard 4 + 2 * slot < size else { return nil }
        let offset = Int(try Self.read(UInt16.self, bytes, at: start + 4 + 2 * slot))
        return offset == 0 ? nil : position + offset
    }

    func scalar<T: FixedWidthInteger>(_ slot: Int, default value: T) throws(FlatBufferError) -> T {
        guard let at = try field(slot) else { return value }
        return try Self.read(T.self, bytes, at: at)
    }

    private func target(_ slot: Int) throws(FlatBufferError) -> Int? {
        guard let at = try field(slot) else { return nil }
        return at + Int(try Self.read(UInt32.self, bytes, at: at))
    }

    func table(_ slot: Int) throws(FlatBufferError) -> FlatBufferTable? {
        guard let at = try target(slot) else { return nil }
        let table = FlatBufferTable(bytes, at: at)
        _ = try table.vtable()
        return table
    }

    func string(_ slot: Int) throws(FlatBufferError) -> String? {
        guard let at = try target(slot) else { return nil }
        let count = Int(try Self.read(UInt32.self, bytes, at: at))
        guard count <= bytes.count - at - 4 else { throw FlatBufferError(description: "a string runs past the metadata") }
        return String(decoding: bytes[(at + 4)..<(at + 4 + count)], as: UTF8.self)
    }

    /// The tables of a vector of tables (empty when absent).
    func tables(_ slot: Int) throws(FlatBufferError) -> [FlatBufferTable] {
        guard let at = try target(slot) else { return [] }
        let count = Int(try Self.read(UInt32.self, bytes, at: at))
        guard count <= (bytes.count - at - 4) / 4 else { throw FlatBufferError(description: "a vector runs past the metadata") }
        var tables: [FlatBufferTable] = []
        for i in 0..<count {
            let element = at + 4 + 4 * i
            let table = FlatBufferTable(bytes, at: element + Int(try Self.read(UInt32.self, bytes, at: element)))
            _ = try table.vtable()
            tables.append(table)
        }
        return tables
    }

    /// A vector of structs of two Int64 each.
    func int64Pairs(_ slot: Int) throws(FlatBufferError) -> [(Int64, Int64)] {
        guard let at = try target(slot) else { return [] }
        let count = Int(try Self.read(UInt32.self, bytes, at: at))
        guard count <= (bytes.count - at - 4) / 16 else { throw FlatBufferError(description: "a vector runs past the metadata") }
        var pairs: [(Int64, Int64)] = []
        for i in 0..<count {
            let element = at + 4 + 16 * i
            pairs.append((try Self.read(Int64.self, bytes, at: element), try Self.read(Int64.self, bytes, at: element + 8)))
        }
        return pairs
    }
}
