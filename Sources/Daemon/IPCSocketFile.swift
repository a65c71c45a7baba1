import CSystemShims
import Foundation
import Models
import ZeroMQ

/// A path this process binds an ipc:// socket at, claimed for as long as the process lives.
///
/// - **one owner**: an exclusive lock on `PATH.lock` (flock), held while the process lives, even
///   when it is stopped or busy, and let go by the kernel when it dies: a second daemon refuses to
///   start instead of taking the path over, and a stale socket file left by a killed daemon is
///   removed safely.
/// - **a safe folder**: the folder must be a real folder (not a link) owned by this user or root
///   and not writable by others (not even sticky, as /tmp is, where another user could make the
///   lock or the socket file first): such a folder is refused, not used.
/// - **its mode from the start**: the socket file is created under a umask that leaves it 0660
///   (owner and group), never wider even for an instant.
/// - **removed only if still ours**: at the end the file is removed only if it is the one bound.
final class IPCSocketFile {
    let path: String
    private var lockDescriptor: Int32
    private var bound: (device: UInt64, inode: UInt64)?

    /// Claims `path`; `createFolder` makes its folder (0700, or 0755 for root) when missing.
    init(path: String, createFolder: Bool) throws(ServerError) {
        self.path = path
        let folder = (path as NSString).deletingLastPathComponent
        if createFolder, access(folder, F_OK) != 0 {
            // parents as needed, the last one private to this user
            try? FileManager.default.createDirectory(atPath: (folder as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            if mkdir(folder, geteuid() == 0 ? 0o755 : 0o700) != 0, errno != EEXIST {
                throw ServerError.unsafeFolder(path: folder, reason: "cannot be created (\(String(cString: strerror(errno))))")
            }
        }
        try Self.checkFolder(folder)
        let lockPath = path + ".lock"
        let fd = open(lockPath, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ServerError.unsafeFolder(path: lockPath, reason: "cannot be opened (\(String(cString: strerror(errno))))") }
        let locked = mpcd_try_lock(fd)
        guard locked == 0 else {
            let holder = (try? FileReading.text(lockPath, limit: 64))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(fd)
            if locked == EWOULDBLOCK {
                throw ServerError.alreadyRunning(endpoint: "ipc://\(path)", pid: Int(holder))
            }
            throw ServerError.unsafeFolder(path: lockPath, reason: "cannot be locked (\(String(cString: strerror(locked))))")
        }
        lockDescriptor = fd
        let pid = "\(getpid())\n"
        ftruncate(fd, 0)
        _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
        // nobody holds the lock, so a socket file here is a dead daemon's
        var info = stat()
        if lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFSOCK else {
                close(fd)
                throw ServerError.unsafeFolder(path: path, reason: "exists and is not a socket: not removing it")
            }
            unlink(path)
        }
    }

    deinit { release() }

    /// Binds `socket` here with mode 0660 from the first instant.
    func bind(_ socket: ZMQSocket) throws(ZMQError) {
        let previous = umask(0o117)
        defer { umask(previous) }
        try socket.bind("ipc://\(path)")
        chmod(path, 0o660)
        var info = stat()
        if lstat(path, &info) == 0 { bound = (UInt64(info.st_dev), UInt64(info.st_ino)) }
    }

    /// Removes the socket file if it is still the one bound, and lets go of the lock.
    func release() {
        var info = stat()
        if let bound, lstat(path, &info) == 0, UInt64(info.st_dev) == bound.device, UInt64(info.st_ino) == bound.inode {
            unlink(path)
        }
        bound = nil
        if lockDescriptor >= 0 { close(lockDescriptor) }
        lockDescriptor = -1
    }

    /// A folder fit for a socket: a folder (not a link to one), owned by this user or root, not
    /// writable by others.
    static func checkFolder(_ folder: String) throws(ServerError) {
        var info = stat()
        guard lstat(folder, &info) == 0 else { throw ServerError.unsafeFolder(path: folder, reason: "does not exist") }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw ServerError.unsafeFolder(path: folder, reason: "is not a folder (a symbolic link?)") }
        guard info.st_uid == geteuid() || info.st_uid == 0 else {
            throw ServerError.unsafeFolder(path: folder, reason: "belongs to user \(info.st_uid), not to this user (\(geteuid())) or root: another user may have made it")
        }
        // not even a sticky one such as /tmp: any user could make the lock or the socket file first
        guard info.st_mode & S_IWOTH == 0 else {
            throw ServerError.unsafeFolder(path: folder, reason: "is writable by every user, who could take the socket's name first")
        }
    }
}
