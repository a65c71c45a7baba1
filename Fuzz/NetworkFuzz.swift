// libFuzzer entry point for the network-file target (Sources/FuzzSupport). Built by scripts/fuzz.sh.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNetworkEntry(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    fuzzNetworkFile(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
