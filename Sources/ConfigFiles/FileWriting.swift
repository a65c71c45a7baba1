import Foundation

/// Why a file could not be read or written: the path and the reason, never an empty error.
public struct FileError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let reason: String

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "\(path): \(reason)" }

    static func errno(_ path: String, _ what: String, _ code: Int32 = Foundation.errno) -> FileError {
        FileError(path: path, reason: "\(what): \(String(cString: strerror(code)))")
    }
}

public typealias FileWriteError = FileError
public typealias FileReadError = FileError

/// Files mpcd writes (weights, checkpoints, keys): never through a symbolic link, never over a
/// device, a directory or anything else that is not a regular file.
public enum FileWriting {
    /// Refuses `path` as an output before any work is done: its folder must exist and be writable,
    /// and the path itself, if it exists, must be a regular file (not a link, device, directory,
    /// socket or pipe) that may be replaced.
    public static func checkReplaceable(_ path: String) throws(FileWriteError) {
        guard !path.isEmpty else { throw FileWriteError(path: path, reason: "an empty path") }
        let folder = (path as NSString).deletingLastPathComponent
        let directory = folder.isEmpty ? "." : folder
        var info = stat()
        guard stat(directory, &info) == 0 else { throw .errno(path, "its folder \(directory) cannot be used") }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw FileWriteError(path: path, reason: "\(directory) is not a folder") }
        guard access(directory, W_OK) == 0 else { throw .errno(path, "its folder \(directory) is not writable") }
        if lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFREG else {
                throw FileWriteError(path: path, reason: "exists and is \(kind(info.st_mode)), not a regular file: refusing to replace it")
            }
        } else if Foundation.errno != ENOENT {
            throw .errno(path, "cannot be examined")
        }
    }

    /// What a file mode describes, for messages.
    static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFLNK: "a symbolic link"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFDIR: "a folder"
        case S_IFIFO: "a pipe"
        case S_IFSOCK: "a socket"
        default: "a special file"
        }
    }

    /// Writes `data` to `path` so that a reader sees the old file or the new one, never half of
    /// either: a new temporary file beside it (created exclusively, never through a link), flushed
    /// to disk, renamed over the old one, and the folder flushed. Refuses to replace anything but a
    /// regular file.
    public static func writeAtomically(_ data: Data, to path: String, mode: mode_t = 0o644) throws(FileWriteError) {
        try checkReplaceable(path)
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp").path
        unlink(temporary)  // a leftover of a crashed write by this pid
        try writeNew(data, to: temporary, mode: mode)
        // checked again just before the rename: the path may have changed while the data was written
        do {
            try checkReplaceable(path)
        } catch {
            unlink(temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            let code = Foundation.errno
            unlink(temporary)
            throw .errno(path, "cannot be replaced", code)
        }
        let folder = open(url.deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY)
        if folder >= 0 {
            fsync(folder)
            close(folder)
        }
    }

    /// Creates `path`, which must not exist, with `mode` (narrowed by the umask) from its first
    /// byte, never a wider mode fixed afterwards; writes `data` and flushes it to disk.
    public static func writeNew(_ data: Data, to path: String, mode: mode_t) throws(FileWriteError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw .errno(path, Foundation.errno == EEXIST ? "already exists; not overwriting it" : "cannot be created") }
        var failure: FileWriteError?
        data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            var offset = 0
            while offset < bytes.count {
                let written = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if Foundation.errno == EINTR { continue }
                    failure = .errno(path, "cannot be written")
                    return
                }
                offset += written
            }
        }
        if failure == nil, fsync(fd) != 0 { failure = .errno(path, "cannot be flushed to disk") }
        close(fd)
        if let failure {
            unlink(path)
            throw failure
        }
    }
}

/// `FileWriting.writeAtomically` with the default mode.
public func writeAtomically(_ data: Data, to path: String) throws(FileWriteError) {
    try FileWriting.writeAtomically(data, to: path)
}
