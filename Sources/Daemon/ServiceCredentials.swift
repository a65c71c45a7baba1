import Foundation

/// The CURVE secret key under the systemd service: the shipped unit passes the regular files of the
/// `credentials` folder beside the configuration (/etc/mpcd/credentials) to the daemon as
/// credentials (`LoadCredential=mpcd:/etc/mpcd/credentials`), which systemd copies where only the
/// service's dynamic user can read them, `$CREDENTIALS_DIRECTORY/mpcd_NAME`, once, at start. The
/// folder itself stays root's. Only the secret key is read from there: a copy made at start would
/// keep a reload from reading anything else anew (an allow-list, a network).
public enum ServiceCredentials {
    public static let folderName = "credentials"
    /// The unit's credential ID; systemd names each file's copy ID_FILENAME.
    public static let credentialID = "mpcd"
    /// systemd 252 refuses to start the unit when the folder's files add up to more.
    public static let maxFolderBytes = 1 << 20

    /// `path` made absolute and its "." and ".." taken out, without following links (systemd reads
    /// the folder's own entries).
    static func lexical(_ path: String) -> String {
        var parts: [Substring] = []
        for part in DaemonConfiguration.absolutePath(path).split(separator: "/") {
            if part == "." || part.isEmpty { continue }
            if part == ".." { _ = parts.popLast() } else { parts.append(part) }
        }
        return "/" + parts.joined(separator: "/")
    }

    static func folder(_ configurationFolder: String) -> String {
        lexical((configurationFolder as NSString).appendingPathComponent(folderName))
    }

    /// The entry of the credentials folder that `path` names, or nil when it names a file elsewhere
    /// (a subfolder's file included: the daemon reads only the folder's own entries).
    public static func credentialName(of path: String, configurationFolder: String) -> String? {
        let prefix = folder(configurationFolder) + "/"
        let file = lexical(path)
        guard file.hasPrefix(prefix) else { return nil }
        let name = String(file.dropFirst(prefix.count))
        return name.isEmpty || name.contains("/") ? nil : name
    }

    /// Whether `path` lies in the credentials folder or below it.
    static func isInFolder(_ path: String, configurationFolder: String) -> Bool {
        lexical(path).hasPrefix(folder(configurationFolder) + "/")
    }

    /// Where the daemon reads the secret key at `path` from: under the unit
    /// (`CREDENTIALS_DIRECTORY` set), from systemd's copy when `path` is in the credentials folder;
    /// anywhere else from where it is.
    public static func readablePath(_ path: String, configurationFolder: String,
                                    environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        guard let directory = environment["CREDENTIALS_DIRECTORY"], directory.hasPrefix("/"),
              let name = credentialName(of: path, configurationFolder: configurationFolder) else { return path }
        return (directory as NSString).appendingPathComponent("\(credentialID)_\(name)")
    }

    /// What in the credentials folder would keep the unit from starting or the daemon from
    /// finding its key: systemd 252 fails the unit for a missing folder, a name it refuses (not
    /// ASCII, or with a colon or a space) or more than 1 MiB in all, and skips links and hidden
    /// files (so a key behind one never arrives).
    public static func folderProblems(configurationFolder: String) -> [String] {
        let path = folder(configurationFolder)
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            return ["\(path) is missing (or not a folder): the unit passes it to the service (LoadCredential=) and does not start without it; "
                + "make it with install -d -m 0700 \(path)"]
        }
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: path) else { return ["\(path) cannot be read"] }
        var problems: [String] = []
        var total = 0
        for name in entries.sorted() {
            let entry = (path as NSString).appendingPathComponent(name)
            guard lstat(entry, &info) == 0 else { continue }
            let allowed = name.unicodeScalars.allSatisfy { $0.isASCII && $0.value > 0x20 && $0 != ":" && $0 != "/" && $0.value != 0x7F }
            if !allowed {
                problems.append("\(entry): systemd refuses this name as a credential and then does not start the unit; rename it (ASCII letters, digits, . _ -)")
            } else if name.hasPrefix(".") {
                problems.append("\(entry): systemd skips hidden files, so the service would never get it; rename it")
            } else if info.st_mode & S_IFMT == S_IFLNK {
                problems.append("\(entry) is a link: systemd skips links in a credentials folder; put the file itself there")
            } else if info.st_mode & S_IFMT == S_IFDIR {
                problems.append("\(entry) is a folder: the daemon reads only the folder's own files; move its files up")
            } else {
                total += Int(info.st_size)
            }
        }
        if total > maxFolderBytes {
            problems.append("\(path) holds \(total) bytes: systemd does not start the unit with more than \(maxFolderBytes) bytes of credentials; keep only the secret key there")
        }
        return problems
    }
}

/// Whether the shipped unit's user could read the files a configuration names: `mpcd --check`,
/// run by root, judges as the service will run rather than as root. The unit runs the daemon as
/// a dynamic user with no groups (so a file needs read permission for others, and each folder
/// above it search permission), hides /home, /root and /run/user (ProtectHome=yes) and gives it a
/// /tmp and /var/tmp of its own (PrivateTmp=yes). Links are followed as the daemon would follow
/// them; ACLs are not read (the dynamic user gets the permissions for others).
public enum ServiceAccessCheck {
    static let hiddenFolders: [(folder: String, setting: String)] = [
        ("/home", "ProtectHome=yes"), ("/root", "ProtectHome=yes"), ("/run/user", "ProtectHome=yes"),
        ("/tmp", "PrivateTmp=yes"), ("/var/tmp", "PrivateTmp=yes"),
    ]

    /// What the service could not read, one sentence each naming the key and the fix, the
    /// credentials folder's own problems included.
    public static func problems(_ files: [DaemonConfiguration.FileRead], configurationFolder: String) -> [String] {
        files.compactMap { problem($0, configurationFolder: configurationFolder) }
            + ServiceCredentials.folderProblems(configurationFolder: configurationFolder)
    }

    static func problem(_ file: DaemonConfiguration.FileRead, configurationFolder: String) -> String? {
        let path = ServiceCredentials.lexical(file.path)
        if ServiceCredentials.isInFolder(path, configurationFolder: configurationFolder) {
            guard file.secret else {
                return "\(file.key): \(path) is in the credentials folder, which only the CURVE secret key is read from (systemd's copy is made at start, "
                    + "so a reload would not see a change); keep it in \(configurationFolder), readable by others"
            }
            guard let name = ServiceCredentials.credentialName(of: path, configurationFolder: configurationFolder) else {
                return "\(file.key): \(path) is in a subfolder of the credentials folder; the daemon reads only the folder's own files: move it up"
            }
            var info = stat()
            guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
                return "\(file.key): \(path) is not a regular file (missing, or a link systemd would skip); the unit would not pass it as credential \(ServiceCredentials.credentialID)_\(name)"
            }
            return nil  // systemd reads it as root at start
        }
        // the file as the daemon opens it: through any links
        let real = realPath(path)
        for (folder, setting) in hiddenFolders where real == folder || real.hasPrefix(folder + "/") {
            return "\(file.key): \(real) is under \(folder), which the unit hides from the service (\(setting)); move it to \(configurationFolder)"
                + (file.secret ? " (the secret key to \(configurationFolder)/\(ServiceCredentials.folderName))" : "")
        }
        var info = stat()
        guard stat(real, &info) == 0 else { return "\(file.key): \(real): \(String(cString: strerror(errno)))" }
        if info.st_mode & S_IROTH == 0 {
            return "\(file.key): \(real) (owner \(info.st_uid), mode \(String(info.st_mode & 0o777, radix: 8))) is not readable by the service's dynamic user, which has no groups: "
                + (file.secret ? "put it in \(configurationFolder)/\(ServiceCredentials.folderName)/ and name it there; the unit passes that folder's files to the service as credentials"
                               : "chmod o+r it")
        }
        var folder = (real as NSString).deletingLastPathComponent
        while folder.count > 1 {
            if stat(folder, &info) == 0, info.st_mode & S_IXOTH == 0 {
                return "\(file.key): the service's user cannot reach \(real): \(folder) (mode \(String(info.st_mode & 0o777, radix: 8))) does not let others through; chmod o+x it"
            }
            folder = (folder as NSString).deletingLastPathComponent
        }
        return nil
    }

    /// `path` with every link resolved (as far as it exists).
    static func realPath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
