import Foundation

/// Secrets for the systemd service: the shipped unit passes every file of the `credentials` folder
/// beside the configuration (/etc/mpcd/credentials) to the daemon as a credential
/// (`LoadCredential=mpcd:/etc/mpcd/credentials`), which systemd copies where only the service's
/// dynamic user can read it, `$CREDENTIALS_DIRECTORY/mpcd_NAME`. The folder itself stays root's.
public enum ServiceCredentials {
    public static let folderName = "credentials"
    /// The unit's credential ID; systemd names each file's copy ID_FILENAME.
    public static let credentialID = "mpcd"

    /// The file of the credentials folder that `path` names, or nil when it names another file
    /// (only files directly in the folder: systemd passes a folder's files by their names).
    public static func credentialName(of path: String, configurationFolder: String) -> String? {
        let folder = ((configurationFolder as NSString).appendingPathComponent(folderName) as NSString).standardizingPath + "/"
        let file = (path as NSString).standardizingPath
        guard file.hasPrefix(folder) else { return nil }
        let name = String(file.dropFirst(folder.count))
        return name.isEmpty || name.contains("/") ? nil : name
    }

    /// Where the daemon reads `path` from: under the unit (`CREDENTIALS_DIRECTORY` set), a file of
    /// the credentials folder is read from systemd's copy; anywhere else from where it is.
    public static func readablePath(_ path: String, configurationFolder: String,
                                    environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        guard let directory = environment["CREDENTIALS_DIRECTORY"], directory.hasPrefix("/"),
              let name = credentialName(of: path, configurationFolder: configurationFolder) else { return path }
        return (directory as NSString).appendingPathComponent("\(credentialID)_\(name)")
    }
}

/// Whether the shipped unit's user could read the files a configuration names: `mpcd --check`,
/// run by root, judges as the service will run rather than as root. The unit runs the daemon as
/// a dynamic user with no groups (so a file needs read permission for others, and each folder
/// above it search permission), hides /home, /root and /run/user (ProtectHome=yes) and gives it a
/// /tmp and /var/tmp of its own (PrivateTmp=yes). ACLs are not read.
public enum ServiceAccessCheck {
    static let hiddenFolders: [(folder: String, setting: String)] = [
        ("/home", "ProtectHome=yes"), ("/root", "ProtectHome=yes"), ("/run/user", "ProtectHome=yes"),
        ("/tmp", "PrivateTmp=yes"), ("/var/tmp", "PrivateTmp=yes"),
    ]

    /// What the service could not read, one sentence each naming the key and the fix.
    public static func problems(_ files: [DaemonConfiguration.FileRead], configurationFolder: String) -> [String] {
        files.compactMap { problem($0, configurationFolder: configurationFolder) }
    }

    static func problem(_ file: DaemonConfiguration.FileRead, configurationFolder: String) -> String? {
        let path = (file.path as NSString).standardizingPath
        if let name = ServiceCredentials.credentialName(of: path, configurationFolder: configurationFolder) {
            // systemd reads it as root at start: it only has to exist
            return FileManager.default.fileExists(atPath: path) ? nil
                : "\(file.key): \(path) does not exist; the unit would pass it as credential \(ServiceCredentials.credentialID)_\(name)"
        }
        for (folder, setting) in hiddenFolders where path == folder || path.hasPrefix(folder + "/") {
            return "\(file.key): \(path) is under \(folder), which the unit hides from the service (\(setting)); move it to /etc/mpcd (or /etc/mpcd/credentials for a secret)"
        }
        var info = stat()
        guard stat(path, &info) == 0 else { return "\(file.key): \(path): \(String(cString: strerror(errno)))" }
        if info.st_mode & S_IROTH == 0 {
            return "\(file.key): \(path) (owner \(info.st_uid), mode \(String(info.st_mode & 0o777, radix: 8))) is not readable by the service's dynamic user, which has no groups: "
                + (file.secret ? "put it in \(configurationFolder)/\(ServiceCredentials.folderName)/ and name it there; the unit passes that folder's files to the service as credentials"
                               : "chmod o+r it")
        }
        var folder = (path as NSString).deletingLastPathComponent
        while folder.count > 1 {
            if stat(folder, &info) == 0, info.st_mode & S_IXOTH == 0 {
                return "\(file.key): the service's user cannot reach \(path): \(folder) (mode \(String(info.st_mode & 0o777, radix: 8))) does not let others through; chmod o+x it"
            }
            folder = (folder as NSString).deletingLastPathComponent
        }
        return nil
    }
}
