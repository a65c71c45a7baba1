// libFuzzer entry point for the decoder target (Sources/FuzzSupport). Built by scripts/fuzz.sh.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDecoderEntry(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    fuzzDecode(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
