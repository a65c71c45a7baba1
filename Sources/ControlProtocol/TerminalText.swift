/// `text` that may carry a plug-in's or a file's words (an error from the daemon, a configuration
/// error) safe for a terminal: control characters other than newline and tab shown as \u{..}, so no
/// escape sequence can clear the screen, move the cursor or write the clipboard.
public func printable(_ text: String) -> String {
    var out = ""
    out.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
    for scalar in text.unicodeScalars {
        let v = scalar.value
        if (v < 0x20 && scalar != "\n" && scalar != "\t") || (0x7F...0x9F).contains(v) {
            out += "\\u{\(String(v, radix: 16))}"
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return out
}
