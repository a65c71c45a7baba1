import Foundation

/// The files an MJCF model makes MuJoCo open besides itself (included XML, meshes, textures,
/// height fields, skins), checked as mpcd checks every file it reads before MuJoCo opens them:
/// MuJoCo would block for ever opening a FIFO, and abort the process on a file too big to hold.
///
/// The check errs on the side of looking at more: every `file` attribute (and a cube texture's
/// `fileright` ... `fileback`) of the model and of the files it includes, entities decoded, at
/// every place MuJoCo 2.2.2 or later might look for it (beside the model, under the compiler's
/// `meshdir`, `texturedir` or `assetdir`, with or without its folders as `strippath` does). A name
/// that is at none of them is left for MuJoCo to report as missing. Tags are read in one pass over
/// the bytes, quotes respected and comments skipped, as the XML parser reads them; a file name that
/// is not UTF-8, holds a control character or a character reference that is no character is
/// refused, since the parser and this check could read it differently.
enum MJCFReferences {
    /// Largest asset file (a mesh, texture or height field) MuJoCo is let open.
    static let maxAssetBytes = 512 << 20
    /// Deepest nesting of includes followed, most files looked at, and most bytes of included XML.
    static let maxIncludeDepth = 16, maxFiles = 2000, maxIncludedBytes = 64 << 20

    /// Throws the first referenced file that is not a regular file of bounded size.
    static func check(model path: String, bytes: [UInt8], includeLimit: Int) throws(MuJoCoModel.LoadError) {
        func fail(_ reason: String) -> MuJoCoModel.LoadError { MuJoCoModel.LoadError(path: path, reason: reason) }
        let folder = (path as NSString).deletingLastPathComponent
        var documents = [(file: path, tags: try Self.tags(in: bytes, file: path, model: path))]
        var seen = Set<FileIdentity>()
        if let identity = FileIdentity(path) { seen.insert(identity) }
        var seenPaths: Set<String> = [path]
        var queue = [(file: path, tags: documents[0].tags, depth: 0)]
        var includedBytes = 0
        // includes first, all of them: a compiler element in any may set the asset folders
        while !queue.isEmpty {
            let (file, tags, depth) = queue.removeFirst()
            for tag in tags where tag.element == "include" && tag.attribute == "file" {
                guard let candidate = includeCandidate(for: tag.value, folder: folder), exists(candidate) else { continue }
                seenPaths.insert(candidate)
                // the same file under another spelling (./a.xml) is the same include
                if let identity = FileIdentity(candidate), !seen.insert(identity).inserted { continue }
                guard depth < maxIncludeDepth, seenPaths.count <= maxFiles else {
                    throw fail("includes nest deeper than \(maxIncludeDepth) or name more than \(maxFiles) files (from \(file))")
                }
                let included: [UInt8]
                do {
                    included = [UInt8](try FileReading.read(candidate, limit: includeLimit))
                } catch {
                    throw fail("its include \(candidate) (from \(file)) \(error.reason)")
                }
                includedBytes += included.count
                guard includedBytes <= maxIncludedBytes else { throw fail("its includes hold more than \(maxIncludedBytes) bytes of XML") }
                let parsed = try Self.tags(in: included, file: candidate, model: path)
                documents.append((candidate, parsed))
                queue.append((candidate, parsed, depth + 1))
            }
        }
        let assetFolders = documents.flatMap { document in
            document.tags.filter { ["meshdir", "texturedir", "assetdir"].contains($0.attribute) }.map(\.value)
        }
        let fileAttributes: Set<String> = ["file", "fileright", "fileleft", "fileup", "filedown", "filefront", "fileback"]
        var checked = Set<String>()
        for document in documents {
            for tag in document.tags where fileAttributes.contains(tag.attribute) {
                for candidate in candidates(for: tag.value, folder: folder, assetFolders: assetFolders)
                where !seenPaths.contains(candidate) && checked.insert(candidate).inserted && exists(candidate) {
                    guard checked.count <= maxFiles else { throw fail("names more than \(maxFiles) files") }
                    do {
                        try FileReading.check(candidate, limit: maxAssetBytes)
                    } catch {
                        throw fail("its file \(candidate) (named in \(document.file)) \(error.reason)")
                    }
                }
            }
        }
    }

    /// A file's device and inode, when it can be examined.
    struct FileIdentity: Hashable {
        let device: UInt64, inode: UInt64
        init?(_ path: String) {
            var info = stat()
            guard stat(path, &info) == 0 else { return nil }
            device = UInt64(info.st_dev)
            inode = UInt64(info.st_ino)
        }
    }

    struct Tag {
        let element: String, attribute: String, value: String
    }

    /// Every attribute of every start tag in `bytes`, read in one pass: quotes respected (a `>` in
    /// a value does not end its tag), comments, declarations and processing instructions skipped.
    /// Attribute names are lowercased (MuJoCo's are). Values are decoded (entities); one that could
    /// be read otherwise by the XML parser than here is refused, naming `file`.
    static func tags(in bytes: [UInt8], file: String, model: String) throws(MuJoCoModel.LoadError) -> [Tag] {
        var tags: [Tag] = []
        let n = bytes.count
        var i = 0
        func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }
        func starts(_ pattern: [UInt8], at k: Int) -> Bool {
            guard k + pattern.count <= n else { return false }
            for (offset, byte) in pattern.enumerated() where bytes[k + offset] != byte { return false }
            return true
        }
        func find(_ pattern: [UInt8], from k: Int) -> Int {
            var j = k
            while j + pattern.count <= n {
                if starts(pattern, at: j) { return j }
                j += 1
            }
            return n
        }
        let commentOpen = Array("<!--".utf8), commentClose = Array("-->".utf8), instructionOpen = Array("<?".utf8)
        let instructionClose = Array("?>".utf8), declarationOpen = Array("<!".utf8), endOpen = Array("</".utf8), close = Array(">".utf8)
        while i < n {
            guard bytes[i] == 0x3C else { i += 1; continue }  // '<'
            if starts(commentOpen, at: i) { i = find(commentClose, from: i + 4) + 3; continue }
            if starts(instructionOpen, at: i) { i = find(instructionClose, from: i + 2) + 2; continue }
            if starts(declarationOpen, at: i) || starts(endOpen, at: i) { i = find(close, from: i + 2) + 1; continue }
            var j = i + 1
            let nameStart = j
            while j < n, !isSpace(bytes[j]), bytes[j] != 0x3E, bytes[j] != 0x2F { j += 1 }
            let element = String(decoding: bytes[nameStart..<j], as: UTF8.self).lowercased()
            // attributes until '>' (or the end)
            while j < n, bytes[j] != 0x3E {
                if isSpace(bytes[j]) || bytes[j] == 0x2F { j += 1; continue }
                let attributeStart = j
                while j < n, !isSpace(bytes[j]), bytes[j] != 0x3D, bytes[j] != 0x3E { j += 1 }
                let attribute = String(decoding: bytes[attributeStart..<j], as: UTF8.self).lowercased()
                while j < n, isSpace(bytes[j]) { j += 1 }
                guard j < n, bytes[j] == 0x3D else { continue }  // no value: not an attribute we read
                j += 1
                while j < n, isSpace(bytes[j]) { j += 1 }
                guard j < n, bytes[j] == 0x22 || bytes[j] == 0x27 else { continue }
                let quote = bytes[j]
                let valueStart = j + 1
                j = valueStart
                while j < n, bytes[j] != quote { j += 1 }
                let raw = bytes[valueStart..<min(j, n)]
                j += 1
                guard attribute.hasPrefix("file") || attribute.hasSuffix("dir") else { continue }
                guard let text = String(validating: raw, as: UTF8.self) else {
                    throw MuJoCoModel.LoadError(path: model, reason: "\(file): a \(attribute) attribute of <\(element)> that is not UTF-8")
                }
                let value = decodeEntities(text)
                guard !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }), !value.contains("&#") else {
                    throw MuJoCoModel.LoadError(path: model, reason: "\(file): a \(attribute) attribute of <\(element)> with a control character or a character reference that is no character")
                }
                tags.append(Tag(element: element, attribute: attribute, value: value))
            }
            i = j + 1
        }
        return tags
    }

    /// Where MuJoCo may look for `name`: as given when absolute, else beside the model and under
    /// each asset folder (itself absolute or beside the model), whole and stripped of its folders.
    static func candidates(for name: String, folder: String, assetFolders: [String]) -> [String] {
        guard !name.isEmpty else { return [] }
        let base = (name as NSString).lastPathComponent
        var result = name.hasPrefix("/") ? [name] : []
        for sub in [""] + assetFolders {
            let root = sub.hasPrefix("/") ? sub : (folder as NSString).appendingPathComponent(sub)
            for file in name.hasPrefix("/") ? [base] : [name, base] {
                let path = (root as NSString).appendingPathComponent(file)
                if !result.contains(path) { result.append(path) }
            }
        }
        return result
    }

    /// Where MuJoCo looks for an included file: as given when absolute, else beside the model.
    static func includeCandidate(for name: String, folder: String) -> String? {
        guard !name.isEmpty else { return nil }
        return name.hasPrefix("/") ? name : (folder as NSString).appendingPathComponent(name)
    }

    /// Whether anything is at `path` (a link followed): what is not there is MuJoCo's to report.
    private static func exists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 || lstat(path, &info) == 0
    }

    /// XML's character references and its five named entities, as the XML parser decodes them.
    static func decodeEntities(_ value: String) -> String {
        guard value.contains("&") else { return value }
        var result = "", rest = Substring(value)
        while let amp = rest.firstIndex(of: "&") {
            result += rest[..<amp]
            guard let semicolon = rest[amp...].firstIndex(of: ";"), rest.distance(from: amp, to: semicolon) <= 12 else {
                result += rest[amp...]
                return result
            }
            let entity = rest[rest.index(after: amp)..<semicolon]
            let named = ["amp": "&", "lt": "<", "gt": ">", "quot": "\"", "apos": "'"]
            if let text = named[String(entity)] {
                result += text
            } else if entity.hasPrefix("#x") || entity.hasPrefix("#X"), let code = UInt32(entity.dropFirst(2), radix: 16), let scalar = Unicode.Scalar(code) {
                result.unicodeScalars.append(scalar)
            } else if entity.hasPrefix("#"), let code = UInt32(entity.dropFirst()), let scalar = Unicode.Scalar(code) {
                result.unicodeScalars.append(scalar)
            } else {
                result += rest[amp...semicolon]
            }
            rest = rest[rest.index(after: semicolon)...]
        }
        return result + rest
    }
}
