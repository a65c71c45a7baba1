import Models
import Testing

/// The configuration files' TOML reader: TOML 1.0 (but dates), and a line, a column and a reason
/// for everything else.
@Suite struct TOMLParserTests {
    func parse(_ text: String) throws -> [String: ConfigValue] { try TOMLParser.parse(text) }

    func refusal(_ text: String) -> TOMLParser.SyntaxError? {
        do {
            _ = try TOMLParser.parse(text)
            return nil
        } catch { return error }
    }

    @Test func valuesOfEveryKind() throws {
        let t = try parse("""
            # a comment
            int = 42  # after a value
            negative = -17
            grouped = 1_000_000
            hex = 0xDEAD_beef
            octal = 0o755
            binary = 0b1101
            float = 3.25
            exponent = -2e-3
            both = 6.626e-34
            infinite = -inf
            bool = true
            other = false
            basic = "tab\\there \\"quoted\\" \\u00e9 \\U0001F600"
            literal = 'C:\\path\\no escapes'
            empty = ""
            """)
        #expect(t["int"] == .integer(42) && t["negative"] == .integer(-17) && t["grouped"] == .integer(1_000_000))
        #expect(t["hex"] == .integer(0xDEAD_BEEF) && t["octal"] == .integer(0o755) && t["binary"] == .integer(13))
        #expect(t["float"] == .float(3.25) && t["exponent"] == .float(-2e-3) && t["both"] == .float(6.626e-34))
        #expect(t["infinite"] == .float(-.infinity) && t["bool"] == .bool(true) && t["other"] == .bool(false))
        #expect(t["basic"] == .string("tab\there \"quoted\" é 😀"))
        #expect(t["literal"] == .string("C:\\path\\no escapes") && t["empty"] == .string(""))
        guard case let .float(nan)? = try parse("x = nan")["x"] else { Issue.record("nan"); return }
        #expect(nan.isNaN)
    }

    @Test func multiLineStrings() throws {
        let t = try parse("a = \"\"\"\nfirst\nsecond \\\n    joined\"\"\"\nb = '''\nraw \\n '' '''\n")
        #expect(t["a"] == .string("first\nsecond joined"))
        #expect(t["b"] == .string("raw \\n '' "))
    }

    @Test func arraysAndInlineTables() throws {
        let t = try parse("""
            a = [1, 2, 3,]
            nested = [[1, 2], ["x"], []]
            lines = [
              1,  # one
              2,
            ]
            point = { x = 1, y = 2.5, name.first = "p" }
            points = [{ x = 1 }, { x = 2 }]
            """)
        #expect(t["a"] == .array([.integer(1), .integer(2), .integer(3)]))
        #expect(t["nested"] == .array([.array([.integer(1), .integer(2)]), .array([.string("x")]), .array([])]))
        #expect(t["lines"] == .array([.integer(1), .integer(2)]))
        #expect(t["point"] == .table(["x": .integer(1), "y": .float(2.5), "name": .table(["first": .string("p")])]))
        #expect(t["points"] == .array([.table(["x": .integer(1)]), .table(["x": .integer(2)])]))
    }

    @Test func tablesDottedKeysAndArraysOfTables() throws {
        let t = try parse("""
            top = 1
            [server]
            mode = "realtime"
            limits.sessions = 4
            [task."quoted key"]
            x = 1
            [[task.obstacles]]
            x = 1.0
            [task.obstacles.shape]
            kind = "circle"
            [[task.obstacles]]
            x = 2.0
            [task.obstacles.shape]
            kind = "square"
            """)
        #expect(t["top"] == .integer(1))
        #expect(t["server"] == .table(["mode": .string("realtime"), "limits": .table(["sessions": .integer(4)])]))
        guard case let .table(task)? = t["task"] else { Issue.record("no task table"); return }
        #expect(task["quoted key"] == .table(["x": .integer(1)]))
        #expect(task["obstacles"] == .array([
            .table(["x": .float(1), "shape": .table(["kind": .string("circle")])]),
            .table(["x": .float(2), "shape": .table(["kind": .string("square")])]),
        ]))
    }

    @Test func mistakesAreRefusedWithTheirLine() {
        let cases: [(String, Int, String)] = [
            ("a = 1\na = 2\n", 2, "defined twice"),
            ("[a]\nx = 1\n[a]\n", 3, "defined twice"),
            ("a = {x = 1}\n[a]\n", 2, "cannot be extended"),
            ("a = {x = 1}\na.y = 2\n", 2, "cannot be extended"),
            ("a = 1\n[a.b]\n", 2, "not a table"),
            ("[t.a]\nx = 1\n[t]\na.y = 2\n", 4, "has a [header] of its own"),
            ("[a]\n[[a]]\n", 2, "not an array of tables"),
            ("[!]\n", 1, "expected a key"),
            ("[é]\n", 1, "expected a key"),
            ("[]\n", 1, "expected a key"),
            ("x = 01\n", 1, "is not a value"),
            ("x = 1__0\n", 1, "is not a value"),
            ("x = 1.\n", 1, "is not a value"),
            ("x = 99999999999999999999\n", 1, "is not a value"),
            ("x = \"open\n", 1, "not closed"),
            ("x = 'open\n", 1, "not closed"),
            ("x = \"\\q\"\n", 1, "unknown escape"),
            ("x = \"\\uD800\"\n", 1, "Unicode scalar"),
            ("x = 1979-05-27T07:32:00Z\n", 1, "date"),
            ("x = 1 2\n", 1, "end of the line"),
            ("x = [1, 2\n", 2, "not closed"),
            ("x = {a = 1,}\n", 1, "expected a key"),
            ("x =\n", 1, "expected a value"),
            ("= 1\n", 1, "expected a key"),
            ("x = tru\n", 1, "expected a value"),
            ("x = " + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "\n", 1, "nest deeper"),
            (String(repeating: "a.", count: 100) + "b = 1\n", 1, "dotted parts"),
            ("[server]\u{0}x = 1\n", 1, "end of the line"),
        ]
        for (text, line, reason) in cases {
            let error = refusal(text)
            #expect(error?.line == line, "\(text.prefix(30).debugDescription): \(String(describing: error))")
            #expect(error?.reason.contains(reason) == true, "\(text.prefix(30).debugDescription): \(error?.reason ?? "accepted")")
        }
    }

    /// Inputs built to exhaust the stack or the time: refused quickly, never a crash.
    @Test func deepAndLongInputsAreRefusedOrRead() throws {
        #expect(refusal("a = " + String(repeating: "[", count: 200_000)) != nil)
        #expect(refusal("a = " + String(repeating: "{b = ", count: 200_000)) != nil)
        let many = (0..<20_000).map { "k\($0) = \($0)" }.joined(separator: "\n")
        #expect(try parse(many).count == 20_000)
    }
}
