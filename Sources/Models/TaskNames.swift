/// The rule every task's state and action names keep, whatever made them (Swift, an MJCF file, a
/// plug-in): they travel to clients (the hello), logs and terminals, and a client finds a value by
/// its name.
public enum TaskNames {
    /// Longest name, in bytes of UTF-8.
    public static let maxBytes = 256

    /// Why `names` break the rule (the first name that does), or nil: each 1 to ``maxBytes`` bytes,
    /// without a control character, and no two alike. `what` names one in the reason ("state name").
    public static func problem(in names: [String], what: String) -> String? {
        var seen = Set<String>()
        for (i, name) in names.enumerated() {
            guard (1...maxBytes).contains(name.utf8.count) else { return "\(what) \(i) is empty or longer than \(maxBytes) bytes" }
            guard !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
                return "\(what) \(i) has a control character"
            }
            guard seen.insert(name).inserted else { return "\(what) \(i) (\"\(name)\") is the name of another" }
        }
        return nil
    }
}
