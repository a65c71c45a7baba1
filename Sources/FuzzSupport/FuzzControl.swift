#if canImport(ControlProtocol)
import ControlProtocol
#endif

/// The control-request target: any bytes, a typed request or a reason, never a crash.
public func fuzzControlRequest(_ bytes: [UInt8]) {
    switch ControlRequest.decode(bytes) {
    case let .success(request): precondition(request.command != .policyLoad || !(request.path ?? "").isEmpty)
    case let .failure(error): precondition(!error.reason.isEmpty)
    }
}
