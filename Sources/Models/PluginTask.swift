import CPluginABI
import Foundation

/// A robot model compiled into a shared library: mpcd's plug-in ABI
/// (`Sources/CPluginABI/include/mpcd_plugin.h`, docs/models.md). The only place mpcd calls a
/// plug-in: the library is opened once per load, its description checked (ABI version, sizes,
/// names, bounds, step), and its batched step and costs called on the planner's own buffers.
///
/// A library is never closed: planners of live sessions may be running its code, and a changed
/// library file takes a restart (the system keeps the first one loaded under a path).
public final class ModelPlugin: @unchecked Sendable {
    public struct LoadError: Error, CustomStringConvertible {
        public let path: String
        public let reason: String
        public var description: String { "\(path): \(reason)" }
    }

    public let path: String
    public let stateNames: [String], actionNames: [String]
    public let lower: [Float], upper: [Float]
    public let dt: Float
    let plugin: mpcd_plugin

    public static let maxDimension: UInt32 = 1000

    /// A library file as read: its device and inode, and the size and times that tell a version
    /// rewritten in place (cp over it) from the one read before.
    private struct FileVersion: Hashable {
        let device: UInt64, inode: UInt64
        // the change time too: cp -p and rsync -t keep the modification time of what they copy
        let size: Int64, modified: Int, modifiedNanoseconds: Int, changed: Int, changedNanoseconds: Int
    }
    private struct Instance: Hashable {
        let file: FileVersion, parameters: String
    }
    private static let registry = NSLock()
    /// Plug-ins made, by file version and parameters: a reload with the same ones takes the same
    /// plug-in rather than create another (the ABI has no destroy, so each would be kept for ever).
    nonisolated(unsafe) private static var instances: [Instance: ModelPlugin] = [:]
    /// Why a file version with these parameters was refused once it was loaded: the same again is
    /// refused for the same reason without another copy. Each copy stays in memory, so a reload
    /// retried on an unchanged refused library (or a typo in its parameters) cost one copy of the
    /// library each time, until the descriptors ran out and the fixed library could not be loaded
    /// (attacking helper).
    nonisolated(unsafe) private static var refusals: [Instance: LoadError] = [:]

    /// Largest library file loaded (copied into memory first).
    public static let maxLibraryBytes = 512 << 20

    /// The plug-in of `path` made with `parameters`: the one made before when the file (unchanged
    /// since) and the parameters are the same, else a new one.
    public static func load(path: String, parameters: String) throws(LoadError) -> ModelPlugin {
        func fail(_ reason: String) -> LoadError { LoadError(path: path, reason: reason) }
        // opened without blocking and examined through that descriptor, then copied through it:
        // a FIFO or another file swapped in between cannot be what is loaded
        let fd: Int32, info: stat
        do {
            (fd, info) = try FileReading.open(path, limit: Int.max)
        } catch {
            throw fail(error.reason)
        }
        defer { close(fd) }
        let file = FileVersion(device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
                               modified: info.st_mtim.tv_sec, modifiedNanoseconds: info.st_mtim.tv_nsec,
                               changed: info.st_ctim.tv_sec, changedNanoseconds: info.st_ctim.tv_nsec)
        registry.lock()
        defer { registry.unlock() }
        let instance = Instance(file: file, parameters: parameters)
        if let made = instances[instance] { return made }
        if let refused = refusals[instance] { throw refused }
        // loaded from a private copy in memory, never from the file: the system maps a library's
        // code from its file, and a library rewritten in place (cp over it) then changed the code
        // under the running daemon, which crashed at its next tick (attacking helper)
        let copy = mpcd_plugin_private_copy(fd, Int64(maxLibraryBytes))
        guard copy >= 0 else {
            throw fail(errno == EFBIG ? "is larger than \(maxLibraryBytes >> 20) MiB" : "cannot be read: \(String(cString: strerror(errno)))")
        }
        guard let handle = dlopen("/proc/self/fd/\(copy)", RTLD_NOW | RTLD_LOCAL) else {
            close(copy)
            throw fail("cannot be loaded: \(dlerror().map { String(cString: $0) } ?? "unknown error")")
        }
        // Kept open for the life of the process once the library is loaded through it, even if
        // it is refused below (a library is never closed): the loader knows a library by the name
        // it was opened under, /proc/self/fd/N, and a later library opened under a reused N would
        // be taken for this one. A refused library's N was reused: the fixed file copied over it
        // was refused with the old one's reason, or served with the old one's code (attacking helper).
        do {
            let plugin = try ModelPlugin(path: path, handle: handle, parameters: parameters)
            instances[instance] = plugin
            return plugin
        } catch {
            refusals[instance] = error
            throw error
        }
    }

    private init(path: String, handle: UnsafeMutableRawPointer, parameters: String) throws(LoadError) {
        self.path = path
        func fail(_ reason: String) -> LoadError { LoadError(path: path, reason: reason) }
        guard let symbol = dlsym(handle, "mpcd_plugin_create") else {
            throw fail("has no mpcd_plugin_create: not an mpcd plug-in (Sources/CPluginABI/include/mpcd_plugin.h)")
        }
        let create = unsafeBitCast(symbol, to: mpcd_plugin_create_function.self)
        var plugin = mpcd_plugin()
        var message = [CChar](repeating: 0, count: 512)
        let status = create(parameters, &plugin, &message, Int32(message.count))
        message[message.count - 1] = 0
        let reason = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard status == 0 else { throw fail("refused its parameters: \(reason.isEmpty ? "no reason given" : reason)") }
        guard plugin.abi_version == MPCD_PLUGIN_ABI_VERSION else {
            throw fail("was built for plug-in ABI version \(plugin.abi_version); this mpcd speaks version \(MPCD_PLUGIN_ABI_VERSION)")
        }
        let n = plugin.state_dimension, m = plugin.action_dimension
        guard (1...Self.maxDimension).contains(n), (1...Self.maxDimension).contains(m) else {
            throw fail("describes a state of \(n) and an action of \(m) values; each must be 1 to \(Self.maxDimension)")
        }
        guard plugin.step != nil, plugin.running_cost != nil else { throw fail("has no step or no running_cost") }
        guard let stateNames = plugin.state_names, let actionNames = plugin.action_names,
              let lowerBounds = plugin.action_lower, let upperBounds = plugin.action_upper else {
            throw fail("leaves state_names, action_names, action_lower or action_upper NULL")
        }
        // C strings first: a bounded length (a name may be unterminated for megabytes) and UTF-8;
        // then the rule every task's names keep (TaskNames)
        func names(_ list: UnsafePointer<UnsafePointer<CChar>?>, _ count: UInt32, _ what: String) throws(LoadError) -> [String] {
            var out: [String] = []
            for i in 0..<Int(count) {
                guard let name = list[i] else { throw fail("\(what) \(i) is NULL") }
                guard strnlen(name, TaskNames.maxBytes + 1) <= TaskNames.maxBytes else { throw fail("\(what) \(i) is longer than the \(TaskNames.maxBytes) bytes a name may have") }
                guard let text = String(validatingCString: name) else { throw fail("\(what) \(i) is not UTF-8 text") }
                out.append(text)
            }
            if let problem = TaskNames.problem(in: out, what: what) { throw fail(problem) }
            return out
        }
        self.stateNames = try names(stateNames, n, "state name")
        self.actionNames = try names(actionNames, m, "action name")
        lower = (0..<Int(m)).map { lowerBounds[$0] }
        upper = (0..<Int(m)).map { upperBounds[$0] }
        // within 1e12, as every physical parameter: the planner's std is a share of the range,
        // and ±3e38 overflowed it, every sample invalid and the action 0 without a flag
        for i in 0..<Int(m) where !(abs(lower[i]) <= 1e12 && abs(upper[i]) <= 1e12 && lower[i] < upper[i]) {
            throw fail("action \(i) (\(self.actionNames[i])) has bounds [\(lower[i]), \(upper[i])]: they must be finite, at most 1e12 in magnitude, lower below upper")
        }
        guard plugin.dt >= TaskRegistry.minimumStep, plugin.dt <= TaskRegistry.maximumStep else {
            throw fail("has a step of \(plugin.dt) s; it must lie in [0.0001, 10]")
        }
        dt = plugin.dt
        self.plugin = plugin
        if let wrong = Self.writesOutsideItsLanes(plugin) { throw fail(wrong) }
    }

    /// Calls the plug-in's step and costs on a block of lanes in the middle of a wider row, as the
    /// planner's parallel rollouts do, among values that must not change: why a call wrote where it was not
    /// given (past its lanes, before them, into a const input, past the costs), or nil. A plug-in
    /// that wrote past its lanes corrupted the daemon's memory: `--check` stopped on a Swift
    /// precondition, a daemon hung at start (attacking helper). Only a write within about 1 MiB of
    /// its buffers is seen; one further off is beyond any check of a plug-in in the process.
    private static func writesOutsideItsLanes(_ plugin: mpcd_plugin) -> String? {
        let n = Int(plugin.state_dimension), m = Int(plugin.action_dimension)
        let margin = 1 << 18
        // 8 lanes of a 32-lane row, then 1024 of a 2048-lane row as the planner's rollouts have them
        // (a plug-in may write past its lanes only on a wide batch); each time among finite values,
        // one small and one beyond any clamp: a NaN there went unseen by an update in place (NaN + x
        // is the same NaN), so `s[k] += ...` one lane too far passed (attacking helper)
        for (lanes, stride, first, untouched) in [(8, 32, 8, Float(0.713_37)), (1024, 2048, 512, Float(-1234.567))] {
            // states, actions and costs, each a row of `stride` lanes per component, between margins
            let count = 4 * margin + (n + m + 1) * stride
            let memory = UnsafeMutablePointer<Float>.allocate(capacity: count)
            defer { memory.deallocate() }
            if let wrong = writesOutsideItsLanes(plugin, memory: memory, count: count, untouched: untouched,
                                                 lanes: lanes, stride: stride, first: first, margin: margin) { return wrong }
        }
        return nil
    }

    /// One call of each function with every value it was not given set to `untouched`.
    private static func writesOutsideItsLanes(_ plugin: mpcd_plugin, memory: UnsafeMutablePointer<Float>, count: Int, untouched: Float,
                                              lanes: Int, stride: Int, first: Int, margin: Int) -> String? {
        let n = Int(plugin.state_dimension), m = Int(plugin.action_dimension)
        let statesAt = margin, actionsAt = statesAt + n * stride + margin, costsAt = actionsAt + m * stride + margin
        memory.initialize(repeating: untouched, count: count)
        let given = { (at: Int, components: Int, value: (Int) -> Float) in
            for c in 0..<components { for k in first..<(first + lanes) { memory[at + c * stride + k] = value(c) } }
        }
        // values a clamp or a scaling would change: not 0, not the midpoint of the bounds
        given(statesAt, n, { 0.37 + 0.01 * Float($0 % 16) })
        given(actionsAt, m, { plugin.action_lower[$0] + 0.8 * (plugin.action_upper[$0] - plugin.action_lower[$0]) })
        given(costsAt, 1, { _ in 0 })
        let states = memory + statesAt + first, actions = memory + actionsAt + first, costs = memory + costsAt + first
        func inBlock(_ i: Int, _ at: Int, _ components: Int) -> Bool {
            i >= at && i < at + components * stride && (first..<(first + lanes)).contains((i - at) % stride)
        }
        /// Why `call` changed a value other than those `writable` allows, or nil.
        func wrote(_ call: String, writable: (Int) -> Bool, _ run: () -> Void) -> String? {
            let before = Array(UnsafeBufferPointer(start: memory, count: count))
            run()
            var wrong = 0, firstWrong = 0
            for i in 0..<count where memory[i].bitPattern != before[i].bitPattern && !writable(i) {
                if wrong == 0 { firstWrong = i }
                wrong += 1
            }
            guard wrong > 0 else { return nil }
            let place = firstWrong >= actionsAt + m * stride + margin / 2 ? "by the costs"
                : firstWrong >= statesAt + n * stride + margin / 2 ? "by or in the actions, an input" : "by or in the states"
            return "\(call) wrote \(wrong) value(s) outside the \(lanes) lanes it was given (the first \(place)): lane k of component c is values[c * stride + k] for k below lanes, and the lanes may be a block of a wider row (stride above lanes; mpcd_plugin.h)"
        }
        if let wrong = wrote("step", writable: { inBlock($0, statesAt, n) }, {
            plugin.step(plugin.context, states, Int32(stride), actions, Int32(stride), Int32(lanes))
        }) { return wrong }
        if let wrong = wrote("running_cost", writable: { inBlock($0, costsAt, 1) }, {
            plugin.running_cost(plugin.context, states, Int32(stride), actions, Int32(stride), costs, Int32(lanes))
        }) { return wrong }
        if let terminal = plugin.terminal_cost, let wrong = wrote("terminal_cost", writable: { inBlock($0, costsAt, 1) }, {
            terminal(plugin.context, states, Int32(stride), costs, Int32(lanes))
        }) { return wrong }
        return nil
    }
}

/// A plug-in's model (``BatchDynamics``): its step on the planner's lanes.
public struct PluginDynamics: BatchDynamics {
    public let plugin: ModelPlugin

    public var stateNames: [String] { plugin.stateNames }
    public var actionNames: [String] { plugin.actionNames }
    public var actionLowerBounds: [Float] { plugin.lower }
    public var actionUpperBounds: [Float] { plugin.upper }
    public var dt: Float { plugin.dt }
    public var observationForms: [ObservationForm] { [ObservationForm(name: "state", components: plugin.stateNames)] }

    public func step(states: BatchView, actions: BatchView) {
        let p = plugin.plugin
        p.step(p.context, states.base, Int32(states.stride), actions.base, Int32(actions.stride), Int32(states.lanes))
    }

    public func state(fromObservation observation: [Double]) throws(ObservationError) -> [Float] {
        try stateFromObservationIdentity(observation)
    }
}

/// A plug-in's cost (``BatchCost``).
public struct PluginCost: BatchCost {
    public let plugin: ModelPlugin

    public func addRunningCost(states: BatchView, actions: BatchView, into costs: UnsafeMutablePointer<Float>) {
        let p = plugin.plugin
        p.running_cost(p.context, states.base, Int32(states.stride), actions.base, Int32(actions.stride), costs, Int32(states.lanes))
    }

    public func addTerminalCost(states: BatchView, into costs: UnsafeMutablePointer<Float>) {
        let p = plugin.plugin
        p.terminal_cost?(p.context, states.base, Int32(states.stride), costs, Int32(states.lanes))
    }
}

extension ControlTask {
    /// `[task]` keys of `name = "plugin"`: `library` (a shared library built against
    /// mpcd_plugin.h, relative to `baseDirectory`) and `parameters` (a string handed to it).
    public static func plugin(_ table: ConfigTable, baseDirectory: String) throws(ConfigurationError) -> ControlTask {
        let file = try table.string("library", default: "")
        guard !file.isEmpty else { throw table.error("library", "required: a shared library built against mpcd_plugin.h (docs/models.md)") }
        let parameters = try table.string("parameters", default: "")
        guard parameters.utf8.count <= 4096, !parameters.contains("\u{0}") else { throw table.error("parameters", "at most 4096 bytes, no NUL") }
        let path = file.hasPrefix("/") ? file : (baseDirectory as NSString).appendingPathComponent(file)
        let plugin: ModelPlugin
        do {
            plugin = try ModelPlugin.load(path: path, parameters: parameters)
        } catch {
            throw table.error("library", error.description)
        }
        return ControlTask(name: "plugin", dynamics: PluginDynamics(plugin: plugin), cost: PluginCost(plugin: plugin))
    }
}
