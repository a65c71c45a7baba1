import Foundation

/// The files an MJCF model makes MuJoCo open besides itself (included XML, meshes, textures,
/// height fields, skins), checked as mpcd checks every file it reads before MuJoCo opens them:
/// MuJoCo would block for ever opening a FIFO, and abort the process on a file too big to hold.
///
/// The check errs on the side of looking at more: every `file` attribute (and a cube texture's
/// `fileright` ... `fileback`) of the model and of the files it includes, entities decoded, at
/// every place MuJoCo 2.2.2 or later might look for it (beside the model, under the compiler's
/// `meshdir`, `texturedir` or `assetdir`, with or without its folders as `strippath` does). A name
/// that is at none of them is left for MuJoCo to report as missing.
enum MJCFReferences {
    /// Largest asset file (a mesh, texture or height field) MuJoCo is let open.
    static let maxAssetBytes = 512 << 20
    /// Deepest nesting of includes followed, and most files looked at.
    static let maxIncludeDepth = 16, maxFiles = 2000

    /// Throws the first referenced file that is not a regular file of bounded size.
    static func check(model path: String, text: String, includeLimit: Int) throws(MuJoCoModel.LoadError) {
        let folder = (path as NSString).deletingLastPathComponent
        var texts = [(path, text)], seen: Set<String> = [path]
        var queue = [(path: path, text: text, depth: 0)]
        // includes first, all of them: a compiler element in any may set the asset folders
        while !queue.isEmpty {
            let (file, body, depth) = queue.removeFirst()
            for name in attributeValues(in: body, element: "include") {
                if let candidate = includeCandidate(for: name, folder: folder), !seen.contains(candidate), exists(candidate) {
                    seen.insert(candidate)
                    guard depth < maxIncludeDepth, seen.count <= maxFiles else {
                        throw MuJoCoModel.LoadError(path: path, reason: "includes nest deeper than \(maxIncludeDepth) or name more than \(maxFiles) files (from \(file))")
                    }
                    let included: String
                    do {
                        included = String(decoding: try FileReading.read(candidate, limit: includeLimit), as: UTF8.self)
                    } catch {
                        throw MuJoCoModel.LoadError(path: path, reason: "its include \(candidate) (from \(file)) \(error.reason)")
                    }
                    texts.append((candidate, included))
                    queue.append((candidate, included, depth + 1))
                }
            }
        }
        let assetFolders = texts.flatMap { _, body in
            ["meshdir", "texturedir", "assetdir"].flatMap { attributeValues(in: body, attribute: $0) }
        }
        var checked = Set<String>()
        for (file, body) in texts {
            for name in attributeValues(in: body, attribute: #"file(?:right|left|up|down|front|back)?"#) {
                for candidate in candidates(for: name, folder: folder, assetFolders: assetFolders)
                where !seen.contains(candidate) && checked.insert(candidate).inserted && exists(candidate) {
                    guard checked.count <= maxFiles else {
                        throw MuJoCoModel.LoadError(path: path, reason: "names more than \(maxFiles) files")
                    }
                    do {
                        try FileReading.check(candidate, limit: maxAssetBytes)
                    } catch {
                        throw MuJoCoModel.LoadError(path: path, reason: "its file \(candidate) (named in \(file)) \(error.reason)")
                    }
                }
            }
        }
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

    /// The values of every attribute matching `attribute` (a regular expression) in `text`.
    static func attributeValues(in text: String, attribute: String) -> [String] {
        values(in: text, pattern: #"(?<![\w:.-])"# + attribute + #"\s*=\s*(?:"([^"]*)"|'([^']*)')"#)
    }

    /// The `file` attribute of every `element` in `text`.
    static func attributeValues(in text: String, element: String) -> [String] {
        values(in: text, pattern: "<" + element + #"\b[^>]*?(?<![\w:.-])file\s*=\s*(?:"([^"]*)"|'([^']*)')"#)
    }

    private static func values(in text: String, pattern: String) -> [String] {
        guard let expression = try? NSRegularExpression(pattern: pattern, options: [.caseInsensitive]) else { return [] }
        let whole = NSRange(text.startIndex..., in: text)
        return expression.matches(in: text, range: whole).compactMap { match in
            for group in 1...2 {
                if let range = Range(match.range(at: group), in: text) { return decodeEntities(String(text[range])) }
            }
            return nil
        }
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
