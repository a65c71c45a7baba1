// libFuzzer entry point for the configuration target (Sources/FuzzSupport). Built by scripts/fuzz.sh.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfigurationEntry(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    fuzzConfigure(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
