import Foundation

/// Files mpcd reads from operators and users (configurations, keys, weights): a regular file of
/// bounded size, opened once and examined through that descriptor, so a device, a pipe or a huge
/// file is refused before it is read, and never blocks the reader.
public enum FileReading {
    public static func read(_ path: String, limit: Int) throws(FileReadError) -> Data {
        func fail(_ reason: String) -> FileReadError { FileReadError(path: path, reason: reason) }
        func system(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
        let (fd, info) = try open(path, limit: limit)
        defer { close(fd) }
        var data = Data(count: Int(info.st_size))
        var filled = 0
        let failure: Int32? = data.withUnsafeMutableBytes { (buffer: UnsafeMutableRawBufferPointer) -> Int32? in
            while filled < buffer.count {
                let n = Glibc.read(fd, buffer.baseAddress! + filled, buffer.count - filled)
                if n < 0 && errno == EINTR { continue }
                if n < 0 { return errno }
                if n == 0 { break }
                filled += n
            }
            return nil
        }
        if let failure { throw fail("cannot be read (\(system(failure)))") }
        return data.prefix(filled)
    }

    /// Checks, without reading it, that `path` is a file `read(_:limit:)` would take: for a file
    /// another program (a library) opens itself. Returns its size.
    @discardableResult
    public static func check(_ path: String, limit: Int) throws(FileReadError) -> Int {
        let (fd, info) = try open(path, limit: limit)
        close(fd)
        return Int(info.st_size)
    }

    /// Opens `path` without blocking (a FIFO without a writer would block an open for reading) and
    /// refuses anything but a regular file of at most `limit` bytes; returns the descriptor (the
    /// caller closes it) and what it is, examined through that descriptor.
    public static func open(_ path: String, limit: Int) throws(FileReadError) -> (descriptor: Int32, info: stat) {
        func fail(_ reason: String) -> FileReadError { FileReadError(path: path, reason: reason) }
        func system(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw fail("cannot be read (\(system()))") }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let reason = system()
            close(fd)
            throw fail("cannot be examined (\(reason))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw fail("is not a regular file")
        }
        guard Int(info.st_size) <= limit else {
            close(fd)
            throw fail("is \(info.st_size) bytes; at most \(limit) are read")
        }
        return (fd, info)
    }

    /// A text file, UTF-8.
    public static func text(_ path: String, limit: Int) throws(FileReadError) -> String {
        let data = try read(path, limit: limit)
        guard let text = String(data: data, encoding: .utf8) else { throw FileReadError(path: path, reason: "is not UTF-8 text") }
        return text
    }
}
