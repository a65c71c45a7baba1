import CMuJoCo
import Foundation

/// A compiled MuJoCo model (MJCF) and a pool of simulation states: the one place mpcd calls MuJoCo
/// (libmujoco 2.2.2: MuJoCo's AVX build where `make` put one beside the binary, else Debian's). No
/// MuJoCo type goes past this file: the rest of mpcd sees dimensions, names, bounds and
/// ``MuJoCoSimulation``'s Swift methods.
///
/// Thread-safe: each rollout worker borrows its own simulation state (`mjData`) from the pool for
/// one batch, so samples split across threads never share one. Every lane starts from the state
/// the planner gives it (positions, velocities, activations; time 0; no solver warm start), so a
/// lane's rollout does not depend on which state it was run in, nor on the thread count.
public final class MuJoCoModel: @unchecked Sendable {
    /// A model file MuJoCo could not compile, with MuJoCo's own message.
    public struct LoadError: Error, CustomStringConvertible, Equatable {
        public let path: String
        public let reason: String
        public var description: String { "\(path): \(reason)" }
    }

    public enum ObjectKind: String, CaseIterable, Sendable {
        case body, site, sensor, joint, actuator

        var mjType: Int32 {
            switch self {
            case .body: Int32(mjOBJ_BODY.rawValue)
            case .site: Int32(mjOBJ_SITE.rawValue)
            case .sensor: Int32(mjOBJ_SENSOR.rawValue)
            case .joint: Int32(mjOBJ_JOINT.rawValue)
            case .actuator: Int32(mjOBJ_ACTUATOR.rawValue)
            }
        }
    }

    public let path: String
    /// nq, nv, na, nu: positions, velocities (degrees of freedom), actuator activations, controls.
    public let positionCount: Int, velocityCount: Int, activationCount: Int, controlCount: Int
    /// The physics step, s.
    public let timestep: Double
    /// Each control's range (`ctrlrange`) as the model gives it, or nil for a control the model
    /// leaves unlimited (the range may still be empty, inverted or not finite: the task judges).
    public let controlRanges: [(lower: Double, upper: Double)?]
    /// The model's initial positions (`qpos0`).
    public let initialPositions: [Double]
    /// Names for the state (positions, velocities, activations) and the controls.
    public let stateNames: [String], controlNames: [String]
    /// MuJoCo's version, e.g. "2.2.2".
    public static var version: String { String(cString: mj_versionString()) }
    /// The file the library was loaded from: MuJoCo's own AVX build where `make` put one beside
    /// the binary (scripts/mujoco_library.sh), else the system's; "unknown" when the loader cannot say.
    public static var libraryPath: String {
        let path = String(cString: mpcd_mujoco_library_path())
        return path.isEmpty ? "unknown" : URL(fileURLWithPath: path).resolvingSymlinksInPath().path
    }

    private let model: UnsafeMutablePointer<mjModel>
    private let lock = NSLock()
    private var pool: [UnsafeMutablePointer<mjData>] = []
    private var all: [UnsafeMutablePointer<mjData>] = []

    /// Largest model file read (an MJCF file is text; its meshes are separate files).
    public static let maxFileBytes = 16 << 20

    public init(path: String) throws(LoadError) {
        self.path = path
        Self.silenceWarnings
        // another version's library would read mjModel and mjData with another layout
        guard mpcd_mujoco_library_matches_headers() != 0 else {
            throw LoadError(path: path, reason: "the MuJoCo library loaded (\(Self.libraryPath)) is \(Self.version), not the \(mjVERSION_HEADER / 100).\(mjVERSION_HEADER / 10 % 10).\(mjVERSION_HEADER % 10) whose headers mpcd was compiled against")
        }
        // read and checked first, as every file mpcd reads: a regular file of bounded size
        let bytes: [UInt8]
        do {
            bytes = [UInt8](try FileReading.read(path, limit: Self.maxFileBytes))
        } catch {
            throw LoadError(path: path, reason: error.reason)
        }
        // and so is every file it names, before MuJoCo opens them
        try MJCFReferences.check(model: path, bytes: bytes, includeLimit: Self.maxFileBytes)
        var message = [CChar](repeating: 0, count: 1000)
        guard let loaded = mpcd_mujoco_load(path, &message, Int32(message.count)) else {
            let text = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            throw LoadError(path: path, reason: "MuJoCo cannot load it: \(text.isEmpty ? "unknown error" : text)")
        }
        model = loaded
        let m = loaded.pointee
        positionCount = Int(m.nq)
        velocityCount = Int(m.nv)
        activationCount = Int(m.na)
        controlCount = Int(m.nu)
        timestep = m.opt.timestep
        initialPositions = (0..<Int(m.nq)).map { m.qpos0[$0] }
        controlRanges = (0..<Int(m.nu)).map { u in
            guard m.actuator_ctrllimited[u] != 0 else { return nil }
            return (m.actuator_ctrlrange[2 * u], m.actuator_ctrlrange[2 * u + 1])
        }
        func name(_ kind: ObjectKind, _ id: Int) -> String? {
            guard let text = mj_id2name(loaded, kind.mjType, Int32(id)) else { return nil }
            let s = String(cString: text)
            return s.isEmpty ? nil : s
        }
        var positions = (0..<Int(m.nq)).map { "qpos\($0)" }, velocities = (0..<Int(m.nv)).map { "qvel\($0)" }
        for j in 0..<Int(m.njnt) {
            let joint = name(.joint, j) ?? "joint\(j)"
            let qposAddress = Int(m.jnt_qposadr[j]), dofAddress = Int(m.jnt_dofadr[j])
            let (qposSize, dofSize): (Int, Int) = switch Int32(m.jnt_type[j]) {
            case Int32(mjJNT_FREE.rawValue): (7, 6)
            case Int32(mjJNT_BALL.rawValue): (4, 3)
            default: (1, 1)
            }
            for i in 0..<qposSize where qposAddress + i < positions.count { positions[qposAddress + i] = qposSize == 1 ? joint : "\(joint)_\(i)" }
            for i in 0..<dofSize where dofAddress + i < velocities.count { velocities[dofAddress + i] = dofSize == 1 ? joint : "\(joint)_\(i)" }
        }
        stateNames = positions.map { "qpos:\($0)" } + velocities.map { "qvel:\($0)" } + (0..<Int(m.na)).map { "act\($0)" }
        controlNames = (0..<Int(m.nu)).map { name(.actuator, $0) ?? "ctrl\($0)" }
    }

    deinit {
        for data in all { mj_deleteData(data) }
        mj_deleteModel(model)
    }

    /// MuJoCo's fatal errors end a guarded call (the shim), not the process; its warnings are
    /// silenced (sampled rollouts meet them routinely: a diverging lane shows as non-finite values).
    private static let silenceWarnings: Void = mpcd_mujoco_install_handlers()

    /// The state has this many values: positions, velocities, activations.
    public var stateCount: Int { positionCount + velocityCount + activationCount }

    /// The id of a named object, or nil.
    public func id(of kind: ObjectKind, named name: String) -> Int? {
        let id = mj_name2id(model, kind.mjType, name)
        return id >= 0 ? Int(id) : nil
    }

    /// Names of every object of a kind (for messages that list what there is).
    public func names(of kind: ObjectKind) -> [String] {
        let count: Int32 = switch kind {
        case .body: model.pointee.nbody
        case .site: model.pointee.nsite
        case .sensor: model.pointee.nsensor
        case .joint: model.pointee.njnt
        case .actuator: model.pointee.nu
        }
        return (0..<Int(count)).compactMap { mj_id2name(model, kind.mjType, Int32($0)).map { String(cString: $0) } }.filter { !$0.isEmpty }
    }

    /// Where a sensor's values start in the sensor data, and how many it has.
    /// Whether a sensor is computed only with accelerations (MuJoCo's acceleration stage).
    public func sensorNeedsAcceleration(_ id: Int) -> Bool {
        Int32(model.pointee.sensor_needstage[id]) == Int32(mjSTAGE_ACC.rawValue)
    }

    public func sensor(_ id: Int) -> (address: Int, dimension: Int) {
        (Int(model.pointee.sensor_adr[id]), Int(model.pointee.sensor_dim[id]))
    }

    /// Where a joint's first position and first velocity are in the state.
    public func joint(_ id: Int) -> (position: Int, velocity: Int) {
        (Int(model.pointee.jnt_qposadr[id]), Int(model.pointee.jnt_dofadr[id]))
    }

    /// Runs `body` with a simulation state of its own (borrowed from the pool, or made); nil when
    /// MuJoCo cannot make one (out of memory).
    public func withSimulation<R>(_ body: (inout MuJoCoSimulation) -> R) -> R? {
        lock.lock()
        let data: UnsafeMutablePointer<mjData>
        if let free = pool.popLast() {
            data = free
            lock.unlock()
        } else {
            lock.unlock()
            guard let made = mpcd_mujoco_make_data(model) else { return nil }
            data = made
            lock.lock()
            all.append(data)
            lock.unlock()
        }
        defer {
            lock.lock()
            pool.append(data)
            lock.unlock()
        }
        var simulation = MuJoCoSimulation(model: model, data: data)
        return body(&simulation)
    }
}

/// One simulation state of a ``MuJoCoModel``, borrowed for one batch: loads a lane's state, steps,
/// computes what cost terms read, stores the state back. Valid only inside `withSimulation`.
public struct MuJoCoSimulation {
    fileprivate let model: UnsafeMutablePointer<mjModel>
    fileprivate let data: UnsafeMutablePointer<mjData>

    /// How much of the model's forward computation a reader of the state needs.
    public enum Stage: Int, Comparable, Sendable {
        /// qpos, qvel, act and ctrl themselves.
        case state = 0
        /// body and site positions (forward kinematics).
        case positions = 1
        /// body and site velocities too.
        case velocities = 2
        /// position and velocity sensors too.
        case sensors = 3

        public static func < (a: Stage, b: Stage) -> Bool { a.rawValue < b.rawValue }
    }

    /// Sets lane `k` of `states` (positions, velocities, activations) as the state, at time 0 with
    /// no warm start.
    public mutating func load(_ states: BatchView, lane k: Int) {
        let d = data.pointee, m = model.pointee
        let nq = Int(m.nq), nv = Int(m.nv), na = Int(m.na)
        for i in 0..<nq { d.qpos[i] = Double(states[component: i][k]) }
        for i in 0..<nv {
            d.qvel[i] = Double(states[component: nq + i][k])
            d.qacc_warmstart[i] = 0
        }
        for i in 0..<na { d.act[i] = Double(states[component: nq + nv + i][k]) }
        data.pointee.time = 0
    }

    /// Sets lane `k` of `actions` as the controls, each clamped into its range.
    public mutating func control(_ actions: BatchView, lane k: Int, lower: [Float], upper: [Float]) {
        let d = data.pointee
        for u in 0..<Int(model.pointee.nu) {
            d.ctrl[u] = Double(Swift.min(Swift.max(actions[component: u][k], lower[u]), upper[u]))
        }
    }

    /// `count` physics steps; false after a fatal MuJoCo error or when the state diverged (the
    /// state is then meaningless).
    public mutating func step(_ count: Int) -> Bool {
        mpcd_mujoco_step(model, data, Int32(count)) == 0
    }

    /// The first half of a physics step (mj_step1): afterwards the loaded state's positions,
    /// velocities and their sensors are computed, as `compute(.sensors)` would, and the controls
    /// may be set. False as `step`'s.
    public mutating func beginStep() -> Bool {
        mpcd_mujoco_step_begin(model, data) == 0
    }

    /// The rest of `count` physics steps begun by `beginStep` (the rest of the first step with the
    /// model's integrator, then count - 1 whole steps): together the same as `step(count)`. False
    /// as `step`'s.
    public mutating func finishStep(_ count: Int) -> Bool {
        mpcd_mujoco_step_finish(model, data, Int32(count)) == 0
    }

    /// Writes NaN to lane `k` of `states`: a lane MuJoCo could not step is no state at all.
    public func invalidate(_ states: BatchView, lane k: Int) {
        let m = model.pointee
        for i in 0..<Int(m.nq + m.nv + m.na) { states[component: i][k] = .nan }
    }

    /// Writes the state to lane `k` of `states`.
    public func store(_ states: BatchView, lane k: Int) {
        let d = data.pointee, m = model.pointee
        let nq = Int(m.nq), nv = Int(m.nv), na = Int(m.na)
        for i in 0..<nq { states[component: i][k] = Float(d.qpos[i]) }
        for i in 0..<nv { states[component: nq + i][k] = Float(d.qvel[i]) }
        for i in 0..<na { states[component: nq + nv + i][k] = Float(d.act[i]) }
    }

    /// Computes what readers of `stage` need from the loaded state; false after a fatal MuJoCo error.
    public mutating func compute(_ stage: Stage) -> Bool {
        stage == .state || mpcd_mujoco_forward(model, data, Int32(stage.rawValue)) == 0
    }

    /// A body's (frame origin) or a site's position, world frame (after `compute(.positions)`).
    public func position(of kind: MuJoCoModel.ObjectKind, _ id: Int) -> (Double, Double, Double) {
        let p = kind == .site ? data.pointee.site_xpos + 3 * id : data.pointee.xpos + 3 * id
        return (p[0], p[1], p[2])
    }

    /// A body's or a site's linear velocity, world frame (after `compute(.velocities)`).
    public func velocity(of kind: MuJoCoModel.ObjectKind, _ id: Int) -> (Double, Double, Double) {
        let type = kind == .site ? Int32(mjOBJ_SITE.rawValue) : Int32(mjOBJ_BODY.rawValue)
        // on the stack: this runs for every lane and step
        var v: (Double, Double, Double, Double, Double, Double) = (0, 0, 0, 0, 0, 0)
        withUnsafeMutablePointer(to: &v) { pointer in
            pointer.withMemoryRebound(to: Double.self, capacity: 6) { mj_objectVelocity(model, data, type, Int32(id), $0, 0) }
        }
        return (v.3, v.4, v.5)
    }

    /// State component `i` of the loaded state: qpos, then qvel, then act (the lanes' layout).
    public func stateValue(_ i: Int) -> Double {
        let nq = Int(model.pointee.nq), nv = Int(model.pointee.nv)
        return i < nq ? data.pointee.qpos[i] : (i < nq + nv ? data.pointee.qvel[i - nq] : data.pointee.act[i - nq - nv])
    }

    /// A sensor value (after `compute(.sensors)`).
    public func sensorValue(_ address: Int) -> Double { data.pointee.sensordata[address] }
}
