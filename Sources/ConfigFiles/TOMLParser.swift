/// TOML 1.0 text to ``ConfigValue``s: the configuration files' reader.
///
/// Written for mpcd rather than taken from a C++ library, whose assertions a malformed file could
/// reach (a table header such as `[!]` aborted the daemon on reload). Every path here ends in a
/// value or a ``TOMLParser/SyntaxError`` naming the line and column; nesting is bounded, so no
/// input can exhaust the stack. Dates and times, which no mpcd key takes, are refused.
public struct TOMLParser {
    public struct SyntaxError: Error, Equatable, CustomStringConvertible {
        public let line: Int
        public let column: Int
        public let reason: String

        public var description: String { "line \(line), column \(column): \(reason)" }
    }

    /// Deepest nesting of arrays and inline tables.
    public static let maxDepth = 64

    private let text: [UInt8]
    private var position = 0
    private var root = Node.table([:])
    /// Tables defined by a header or by dotted keys, and inline tables / arrays that are closed.
    private var defined: Set<[String]> = []
    /// Tables defined by a `[header]`: dotted keys elsewhere cannot add to them.
    private var headed: Set<[String]> = []
    private var sealed: Set<[String]> = []
    /// Path of every array of tables, so `[[a]]` and `[a]` cannot mix.
    private var arraysOfTables: Set<[String]> = []

    /// A value being built: tables stay mutable until the end.
    private indirect enum Node {
        case value(ConfigValue)
        case table([String: Node])
        case tableArray([[String: Node]])
    }

    public static func parse(_ text: String) throws(SyntaxError) -> [String: ConfigValue] {
        var parser = TOMLParser(text: Array(text.utf8))
        return try parser.document()
    }

    private init(text: [UInt8]) { self.text = text }

    // MARK: - Document

    private mutating func document() throws(SyntaxError) -> [String: ConfigValue] {
        var current: [String] = []
        while true {
            skipWhitespaceAndNewlines()
            guard let c = peek() else { break }
            if c == UInt8(ascii: "[") {
                current = try header()
            } else {
                try keyValue(in: current)
            }
            try endOfLine()
        }
        guard case let .table(table) = root else { return [:] }
        return Self.freeze(table)
    }

    private static func freeze(_ table: [String: Node]) -> [String: ConfigValue] {
        table.mapValues { freeze($0) }
    }

    private static func freeze(_ node: Node) -> ConfigValue {
        switch node {
        case let .value(v): v
        case let .table(t): .table(freeze(t))
        case let .tableArray(items): .array(items.map { .table(freeze($0)) })
        }
    }

    /// `[a.b]` or `[[a.b]]`: the path later key/value lines go into.
    private mutating func header() throws(SyntaxError) -> [String] {
        advance()
        let isArray = peek() == UInt8(ascii: "[")
        if isArray { advance() }
        skipSpaces()
        let path = try key()
        skipSpaces()
        try expect("]")
        if isArray { try expect("]") }
        if isArray {
            guard !defined.contains(path) || arraysOfTables.contains(path) else { throw error("\(dotted(path)) is already a table, not an array of tables") }
            arraysOfTables.insert(path)
            try located { (parser: inout TOMLParser) throws(SyntaxError) in try parser.appendTable(at: path) }
        } else {
            guard !defined.contains(path), !arraysOfTables.contains(path) else { throw error("table \(dotted(path)) is defined twice") }
            defined.insert(path)
            headed.insert(path)
            try located { (parser: inout TOMLParser) throws(SyntaxError) in try parser.ensureTable(at: path) }
        }
        return path
    }

    /// Runs a change of the tree; its errors get the current line and column.
    private mutating func located(_ change: (inout TOMLParser) throws(SyntaxError) -> Void) throws(SyntaxError) {
        do {
            try change(&self)
        } catch {
            throw self.error(error.reason)
        }
    }

    private mutating func keyValue(in table: [String]) throws(SyntaxError) {
        let path = try key()
        skipSpaces()
        try expect("=")
        skipSpaces()
        let v = try value(depth: 0)
        // dotted keys define the tables along the way
        for i in 1..<max(1, path.count) {
            let prefix = table + Array(path[0..<i])
            guard !headed.contains(prefix) else { throw error("table \(dotted(prefix)) has a [header] of its own: a dotted key cannot add to it") }
            try located { (parser: inout TOMLParser) throws(SyntaxError) in try parser.ensureTable(at: prefix) }
            defined.insert(prefix)
        }
        try located { (parser: inout TOMLParser) throws(SyntaxError) in try parser.insert(v, at: table + path) }
    }

    private mutating func endOfLine() throws(SyntaxError) {
        skipSpaces()
        skipComment()
        guard let c = peek() else { return }
        if c == UInt8(ascii: "\n") { advance(); return }
        if c == UInt8(ascii: "\r"), peek(1) == UInt8(ascii: "\n") { advance(2); return }
        throw error("expected the end of the line, got \(describe(c))")
    }

    // MARK: - The tree

    /// The table at `path` inside `node`, made where missing; walks into the last element of an
    /// array of tables.
    private mutating func ensureTable(at path: [String]) throws(SyntaxError) {
        try Self.modify(&root, path: path[...], full: path, sealed: sealed) { (_: inout Node) throws(SyntaxError) in }
    }

    private mutating func appendTable(at path: [String]) throws(SyntaxError) {
        guard let last = path.last else { return }
        let parent = Array(path.dropLast())
        try Self.modify(&root, path: parent[...], full: parent, sealed: sealed) { (node: inout Node) throws(SyntaxError) in
            guard case var .table(t) = node else { return }
            switch t[last] {
            case nil: t[last] = .tableArray([[:]])
            case var .tableArray(items)?:
                items.append([:])
                t[last] = .tableArray(items)
            default: throw SyntaxError(line: 0, column: 0, reason: "\(path.joined(separator: ".")) is already defined")
            }
            node = .table(t)
        }
        // a new element: its sub-tables may be defined again
        defined = defined.filter { !($0.count > path.count && Array($0.prefix(path.count)) == path) }
        headed = headed.filter { !($0.count > path.count && Array($0.prefix(path.count)) == path) }
    }

    private mutating func insert(_ value: ConfigValue, at path: [String]) throws(SyntaxError) {
        guard let last = path.last else { return }
        let parent = Array(path.dropLast())
        try Self.modify(&root, path: parent[...], full: parent, sealed: sealed) { (node: inout Node) throws(SyntaxError) in
            guard case var .table(t) = node else { return }
            guard t[last] == nil else { throw SyntaxError(line: 0, column: 0, reason: "key \(path.joined(separator: ".")) is defined twice") }
            t[last] = .value(value)
            node = .table(t)
        }
        if case .table = value { sealed.insert(path) }
        if case .array = value { sealed.insert(path) }
    }

    /// Applies `body` to the table at `path` below `node`, making tables on the way.
    private static func modify(_ node: inout Node, path: ArraySlice<String>, full: [String], sealed: Set<[String]>,
                               _ body: (inout Node) throws(SyntaxError) -> Void) throws(SyntaxError) {
        guard let first = path.first else {
            guard case .table = node else { throw SyntaxError(line: 0, column: 0, reason: "\(full.joined(separator: ".")) is not a table") }
            return try body(&node)
        }
        let walked = Array(full.prefix(full.count - path.count + 1))
        guard !sealed.contains(walked) else {
            throw SyntaxError(line: 0, column: 0, reason: "\(walked.joined(separator: ".")) is an inline table or an array and cannot be extended")
        }
        guard case var .table(t) = node else { throw SyntaxError(line: 0, column: 0, reason: "\(walked.joined(separator: ".")) is not a table") }
        var child = t[first] ?? .table([:])
        switch child {
        case .table:
            try modify(&child, path: path.dropFirst(), full: full, sealed: sealed, body)
        case var .tableArray(items):
            var element = Node.table(items[items.count - 1])
            try modify(&element, path: path.dropFirst(), full: full, sealed: sealed, body)
            if case let .table(e) = element { items[items.count - 1] = e }
            child = .tableArray(items)
        case .value:
            throw SyntaxError(line: 0, column: 0, reason: "\(walked.joined(separator: ".")) is a value, not a table")
        }
        t[first] = child
        node = .table(t)
    }

    // MARK: - Keys

    /// A key: bare or quoted parts joined by dots.
    private mutating func key() throws(SyntaxError) -> [String] {
        var parts: [String] = []
        while true {
            skipSpaces()
            guard let c = peek() else { throw error("expected a key, got the end of the file") }
            if c == UInt8(ascii: "\"") {
                parts.append(try basicString())
            } else if c == UInt8(ascii: "'") {
                parts.append(try literalString())
            } else if Self.isBare(c) {
                let start = position
                while let b = peek(), Self.isBare(b) { advance() }
                parts.append(String(decoding: text[start..<position], as: UTF8.self))
            } else {
                throw error("expected a key (letters, digits, _ and -, or a quoted string), got \(describe(c))")
            }
            skipSpaces()
            guard peek() == UInt8(ascii: ".") else { return parts }
            guard parts.count < Self.maxDepth else { throw error("a key of more than \(Self.maxDepth) dotted parts") }
            advance()
        }
    }

    private static func isBare(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == 0x5F || c == 0x2D
    }

    // MARK: - Values

    private mutating func value(depth: Int) throws(SyntaxError) -> ConfigValue {
        guard depth < Self.maxDepth else { throw error("arrays and inline tables nest deeper than \(Self.maxDepth)") }
        guard let c = peek() else { throw error("expected a value, got the end of the file") }
        switch c {
        case UInt8(ascii: "\""): return .string(try basicString())
        case UInt8(ascii: "'"): return .string(try literalString())
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "{"): return try inlineTable(depth: depth)
        case UInt8(ascii: "t"), UInt8(ascii: "f"):
            if matches("true") { advance(4); return .bool(true) }
            if matches("false") { advance(5); return .bool(false) }
            throw error("expected a value, got \(describe(c))")
        default: return try number()
        }
    }

    private mutating func array(depth: Int) throws(SyntaxError) -> ConfigValue {
        advance()
        var items: [ConfigValue] = []
        while true {
            skipWhitespaceAndNewlines()
            guard let c = peek() else { throw error("an array is not closed") }
            if c == UInt8(ascii: "]") { advance(); return .array(items) }
            items.append(try value(depth: depth + 1))
            skipWhitespaceAndNewlines()
            if peek() == UInt8(ascii: ",") { advance(); continue }
            guard peek() != nil else { throw error("an array is not closed") }
            guard peek() == UInt8(ascii: "]") else { throw error("expected , or ] in an array") }
        }
    }

    private mutating func inlineTable(depth: Int) throws(SyntaxError) -> ConfigValue {
        advance()
        var table: [String: ConfigValue] = [:]
        skipSpaces()
        if peek() == UInt8(ascii: "}") { advance(); return .table(table) }
        while true {
            skipSpaces()
            let path = try key()
            skipSpaces()
            try expect("=")
            skipSpaces()
            let v = try value(depth: depth + 1)
            guard Self.insertInline(v, at: path[...], into: &table) else { throw error("key \(dotted(path)) is defined twice in an inline table") }
            skipSpaces()
            if peek() == UInt8(ascii: ",") { advance(); continue }
            try expect("}")
            return .table(table)
        }
    }

    private static func insertInline(_ value: ConfigValue, at path: ArraySlice<String>, into table: inout [String: ConfigValue]) -> Bool {
        guard let first = path.first else { return false }
        if path.count == 1 {
            guard table[first] == nil else { return false }
            table[first] = value
            return true
        }
        var child: [String: ConfigValue] = [:]
        switch table[first] {
        case nil: break
        case let .table(t)?: child = t
        default: return false
        }
        guard insertInline(value, at: path.dropFirst(), into: &child) else { return false }
        table[first] = .table(child)
        return true
    }

    private mutating func number() throws(SyntaxError) -> ConfigValue {
        let start = position
        while let c = peek(), !(c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D || c == UInt8(ascii: ",") || c == UInt8(ascii: "]")
                                || c == UInt8(ascii: "}") || c == UInt8(ascii: "#")) {
            advance()
        }
        let token = String(decoding: text[start..<position], as: UTF8.self)
        guard !token.isEmpty else { throw error("expected a value, got \(peek().map(describe) ?? "the end of the line")") }
        if let v = Self.parseNumber(token) { return v }
        if token.count >= 8, token.contains("-") || token.contains(":"), token.first?.isNumber == true {
            throw error("\(token) looks like a date or time, which no mpcd key takes")
        }
        throw error("\(token.prefix(40)) is not a value (a number, string, boolean, array or table)")
    }

    /// TOML's integers (decimal with _ between digits, 0x, 0o, 0b) and floats (inf, nan).
    static func parseNumber(_ token: String) -> ConfigValue? {
        switch token {
        case "inf", "+inf": return .float(.infinity)
        case "-inf": return .float(-.infinity)
        case "nan", "+nan", "-nan": return .float(.nan)
        default: break
        }
        let bytes = Array(token.utf8)
        // underscores only between digits
        for (i, b) in bytes.enumerated() where b == UInt8(ascii: "_") {
            guard i > 0, i + 1 < bytes.count, isHexDigit(bytes[i - 1]), isHexDigit(bytes[i + 1]) else { return nil }
        }
        let plain = token.replacingUnderscores()
        for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] where plain.hasPrefix(prefix) {
            let digits = plain.dropFirst(2)
            guard !digits.isEmpty, digits.allSatisfy({ $0.isHexDigit }), let v = Int(digits, radix: radix) else { return nil }
            return .integer(v)
        }
        var unsigned = Substring(plain)
        if unsigned.first == "+" || unsigned.first == "-" { unsigned = unsigned.dropFirst() }
        guard let first = unsigned.first, first.isNumber else { return nil }
        // no leading zeros in the integer part
        let integerPart = unsigned.prefix { $0.isNumber }
        if integerPart.count > 1, integerPart.first == "0" { return nil }
        if unsigned.allSatisfy({ $0.isNumber }) {
            guard let v = Int(plain) else { return nil }  // beyond 64 bits
            return .integer(v)
        }
        // a float: digits, then a fraction and/or an exponent, each with digits
        let rest = unsigned.dropFirst(integerPart.count)
        var tail = rest[...]
        if tail.first == "." {
            let fraction = tail.dropFirst().prefix { $0.isNumber }
            guard !fraction.isEmpty else { return nil }
            tail = tail.dropFirst(1 + fraction.count)
        }
        if tail.first == "e" || tail.first == "E" {
            var exponent = tail.dropFirst()
            if exponent.first == "+" || exponent.first == "-" { exponent = exponent.dropFirst() }
            guard !exponent.isEmpty, exponent.allSatisfy({ $0.isNumber }) else { return nil }
            tail = tail.dropFirst(tail.count)
        }
        guard tail.isEmpty, rest.count > 0, let v = Double(plain) else { return nil }
        return .float(v)
    }

    private static func isHexDigit(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66)
    }

    // MARK: - Strings

    private mutating func basicString() throws(SyntaxError) -> String {
        if matches("\"\"\"") { return try multilineBasicString() }
        advance()
        var out: [UInt8] = []
        while true {
            guard let c = peek() else { throw error("a string is not closed") }
            switch c {
            case UInt8(ascii: "\""):
                advance()
                return try utf8(out)
            case UInt8(ascii: "\\"):
                out += try escape()
            case 0x0A, 0x0D:
                throw error("a string is not closed on its line")
            default:
                guard c >= 0x20 || c == 0x09, c != 0x7F else { throw error("a control character in a string") }
                out.append(c)
                advance()
            }
        }
    }

    private mutating func multilineBasicString() throws(SyntaxError) -> String {
        advance(3)
        skipNewline()
        var out: [UInt8] = []
        while true {
            guard let c = peek() else { throw error("a multi-line string is not closed") }
            if matches("\"\"\"") {
                advance(3)
                // up to two more quotes belong to the string
                while peek() == UInt8(ascii: "\"") { out.append(c); advance() }
                return try utf8(out)
            }
            if c == UInt8(ascii: "\\") {
                // a line-ending backslash trims the whitespace and newlines after it
                var look = position + 1
                while look < text.count, text[look] == 0x20 || text[look] == 0x09 { look += 1 }
                if look < text.count, text[look] == 0x0A || text[look] == 0x0D {
                    position = look
                    skipWhitespaceAndNewlines()
                    continue
                }
                out += try escape()
                continue
            }
            guard c >= 0x20 || c == 0x09 || c == 0x0A || c == 0x0D, c != 0x7F else { throw error("a control character in a string") }
            out.append(c)
            advance()
        }
    }

    private mutating func literalString() throws(SyntaxError) -> String {
        if matches("'''") {
            advance(3)
            skipNewline()
            let start = position
            while position < text.count, !matches("'''") { advance() }
            guard matches("'''") else { throw error("a multi-line literal string is not closed") }
            var end = position
            advance(3)
            while peek() == UInt8(ascii: "'") { advance(); end += 1 }
            return try utf8(Array(text[start..<end]))
        }
        advance()
        let start = position
        while let c = peek(), c != UInt8(ascii: "'") {
            guard c != 0x0A, c != 0x0D else { throw error("a string is not closed on its line") }
            advance()
        }
        guard peek() == UInt8(ascii: "'") else { throw error("a string is not closed") }
        let bytes = Array(text[start..<position])
        advance()
        return try utf8(bytes)
    }

    private mutating func escape() throws(SyntaxError) -> [UInt8] {
        advance()
        guard let c = peek() else { throw error("an escape at the end of the file") }
        advance()
        switch c {
        case UInt8(ascii: "b"): return [0x08]
        case UInt8(ascii: "t"): return [0x09]
        case UInt8(ascii: "n"): return [0x0A]
        case UInt8(ascii: "f"): return [0x0C]
        case UInt8(ascii: "r"): return [0x0D]
        case UInt8(ascii: "\""): return [0x22]
        case UInt8(ascii: "\\"): return [0x5C]
        case UInt8(ascii: "u"), UInt8(ascii: "U"):
            let count = c == UInt8(ascii: "u") ? 4 : 8
            guard position + count <= text.count,
                  let scalar = UInt32(String(decoding: text[position..<(position + count)], as: UTF8.self), radix: 16),
                  let unicode = Unicode.Scalar(scalar) else { throw error("\\\(Character(Unicode.Scalar(c))) needs \(count) hex digits of a Unicode scalar") }
            advance(count)
            return Array(String(Character(unicode)).utf8)
        default: throw error("unknown escape \\\(describe(c))")
        }
    }

    private func utf8(_ bytes: [UInt8]) throws(SyntaxError) -> String {
        guard let s = String(validating: bytes, as: UTF8.self) else { throw error("a string that is not UTF-8") }
        return s
    }

    // MARK: - Reading

    private func peek(_ offset: Int = 0) -> UInt8? { position + offset < text.count ? text[position + offset] : nil }
    private mutating func advance(_ n: Int = 1) { position = min(text.count, position + n) }

    private func matches(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        return position + bytes.count <= text.count && Array(text[position..<(position + bytes.count)]) == bytes
    }

    private mutating func expect(_ s: String) throws(SyntaxError) {
        guard matches(s) else { throw error("expected \(s), got \(peek().map(describe) ?? "the end of the file")") }
        advance(s.utf8.count)
    }

    private mutating func skipSpaces() {
        while let c = peek(), c == 0x20 || c == 0x09 { advance() }
    }

    private mutating func skipComment() {
        guard peek() == UInt8(ascii: "#") else { return }
        while let c = peek(), c != 0x0A { advance() }
    }

    private mutating func skipNewline() {
        if peek() == 0x0A { advance() } else if peek() == 0x0D, peek(1) == 0x0A { advance(2) }
    }

    private mutating func skipWhitespaceAndNewlines() {
        while let c = peek(), c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { advance() }
        if peek() == UInt8(ascii: "#") {
            skipComment()
            skipWhitespaceAndNewlines()
        }
    }


    private func describe(_ c: UInt8) -> String {
        c >= 0x21 && c < 0x7F ? "\"\(Character(Unicode.Scalar(c)))\"" : "byte 0x" + String(c, radix: 16, uppercase: true)
    }

    private func dotted(_ path: [String]) -> String { path.joined(separator: ".") }

    private func lineAndColumn() -> (line: Int, column: Int) {
        var line = 1, column = 1
        for b in text[0..<min(position, text.count)] {
            if b == 0x0A { line += 1; column = 1 } else { column += 1 }
        }
        return (line, column)
    }

    private func error(_ reason: String) -> SyntaxError {
        let (line, column) = lineAndColumn()
        return SyntaxError(line: line, column: column, reason: reason)
    }
}

private extension String {
    func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}
