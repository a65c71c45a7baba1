import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// systemd's service notification protocol, spoken directly: datagrams of `KEY=VALUE` lines to
/// the Unix socket named by `$NOTIFY_SOCKET` (a path, or an abstract name starting with `@`).
/// Without the variable, sending does nothing (the daemon is not under systemd).
final class SystemdNotifier: @unchecked Sendable {
    private let descriptor: Int32
    private var address = sockaddr_un()
    private var addressLength: socklen_t = 0
    /// systemd's watchdog interval, if it asked for pings (`$WATCHDOG_USEC`), in ns.
    let watchdogInterval: UInt64?

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let usec = environment["WATCHDOG_USEC"].flatMap(UInt64.init), usec > 0,
           environment["WATCHDOG_PID"].flatMap(Int32.init).map({ $0 == getpid() }) ?? true {
            watchdogInterval = usec * 1000
        } else {
            watchdogInterval = nil
        }
        guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty, path.utf8.count < 108 else {
            descriptor = -1
            return
        }
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }  // abstract namespace
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        addressLength = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
    }

    deinit { if descriptor >= 0 { close(descriptor) } }

    var isActive: Bool { descriptor >= 0 }

    func send(_ message: String) {
        guard descriptor >= 0 else { return }
        let bytes = Array(message.utf8)
        _ = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bytes.withUnsafeBytes { sendto(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), socketAddress, addressLength) }
            }
        }
    }
}
