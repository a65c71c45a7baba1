// libFuzzer entry point for the recording-file target (Sources/FuzzSupport). Built by scripts/fuzz.sh.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzArrowEntry(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    fuzzArrowStream(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
