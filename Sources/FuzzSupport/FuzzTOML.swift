#if canImport(Models)
import Models
#endif

/// The TOML target: any bytes as a configuration file's text, read or refused with a line and a
/// reason, never a crash (the C++ parser this replaced aborted on `[!]`).
public func fuzzTOML(_ bytes: [UInt8]) {
    do {
        _ = try TOMLParser.parse(String(decoding: bytes, as: UTF8.self))
    } catch {
        precondition(error.line >= 1 && !error.reason.isEmpty, "a refusal without a line or a reason")
    }
}
