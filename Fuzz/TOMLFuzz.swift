// libFuzzer entry point for the TOML target (Sources/FuzzSupport). Built by scripts/fuzz.sh.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTOMLEntry(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    fuzzTOML(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
