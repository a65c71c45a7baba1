#if canImport(ArrowIPC)
import ArrowIPC
#endif

/// The recording-file target (what `mpcd replay` reads): any bytes are read or refused with a
/// reason, never a crash; every batch read has as many columns as the schema has fields.
public func fuzzArrowStream(_ bytes: [UInt8]) {
    do {
        let reader = try ArrowStreamReader(bytes)
        for (rows, columns) in reader.batches {
            precondition(columns.count == reader.fields.count && rows >= 0)
        }
    } catch {
        precondition(!error.description.isEmpty)
    }
}
