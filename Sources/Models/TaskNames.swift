/// The rule every task's state and action names keep, whatever made them (Swift, an MJCF file, a
/// plug-in): they travel to clients (the hello), logs and terminals, and a client finds a value by
/// its name.
public enum TaskNames {
    /// Longest name, in bytes of UTF-8.
    public static let maxBytes = 256

    /// Why `names` break the rule (the first name that does), or nil: each 1 to ``maxBytes`` bytes,
    /// without a control, format (invisible: a zero-width space, a right-to-left override, a soft
    /// hyphen) or line-separator character, and no two alike as text (canonically equivalent
    /// Unicode, as "café" composed and decomposed, counts as alike). The zero-width joiner and
    /// non-joiner are text (Persian words, emoji sequences), not refused. `what` names one in the
    /// reason ("state name").
    public static func problem(in names: [String], what: String) -> String? {
        var seen: [String: Int] = [:]
        for (i, name) in names.enumerated() {
            let bytes = name.utf8.count
            guard bytes > 0 else { return "\(what) \(i) is empty" }
            guard bytes <= maxBytes else { return "\(what) \(i) is \(bytes) bytes long, over the \(maxBytes) a name may have" }
            if let odd = name.unicodeScalars.first(where: {
                $0.value != 0x200C && $0.value != 0x200D
                    && [.control, .format, .lineSeparator, .paragraphSeparator].contains($0.properties.generalCategory)
            }) {
                return "\(what) \(i) has a control or invisible character (U+\(String(odd.value, radix: 16, uppercase: true)))"
            }
            if let other = seen[name] { return "\(what) \(i) (\"\(name)\") is also \(what) \(other)'s" }
            seen[name] = i
        }
        return nil
    }
}
