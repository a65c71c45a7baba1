// libFuzzer entry point for the control-request target (Sources/FuzzSupport). Built by scripts/fuzz.sh.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzControlEntry(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    fuzzControlRequest(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
