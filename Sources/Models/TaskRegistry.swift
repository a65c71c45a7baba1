/// The built-in tasks by the name a configuration uses.
public enum TaskRegistry {
    /// The tasks written in Swift in this module, each complete with its defaults.
    public static let builtInNames = ["pendulum", "mountain_car", "cartpole", "point_mass", "unicycle"]
    /// Every name a configuration may give: the built-in tasks, and the ones a file defines (a
    /// MuJoCo model, a compiled plug-in).
    public static let names = builtInNames + ["mujoco", "plugin"]
    /// The range of a model step, s.
    public static let minimumStep: Float = 1e-4, maximumStep: Float = 10

    /// Builds the task `name` from its `[task]` table; unknown keys and bad values are errors.
    /// Files the table names (a MuJoCo model) are relative to `baseDirectory`.
    public static func make(name: String, parameters: ConfigTable = ConfigTable([:], path: "task"),
                            baseDirectory: String = ".") throws(ConfigurationError) -> ControlTask {
        let task: ControlTask
        switch name {
        case "pendulum": task = try .pendulum(parameters)
        case "mountain_car": task = try .mountainCar(parameters)
        case "cartpole": task = try .cartPole(parameters)
        case "point_mass": task = try .pointMass(parameters)
        case "unicycle": task = try .unicycle(parameters)
        case "mujoco": task = try .mujoco(parameters, baseDirectory: baseDirectory)
        case "plugin": task = try .plugin(parameters, baseDirectory: baseDirectory)
        default:
            throw ConfigurationError(key: parameters.keyPath("name"), reason: "unknown task \"\(name)\"; expected one of \(names.joined(separator: ", "))")
        }
        try parameters.finish()
        // a file's names (an MJCF model's joints and actuators, a plug-in's) keep the rule a client relies on
        let file = parameters.keyPath(name == "plugin" ? "library" : name == "mujoco" ? "model" : "name")
        for (names, what) in [(task.dynamics.stateNames, "state name"), (task.dynamics.actionNames, "action name")] {
            guard let problem = TaskNames.problem(in: names, what: what) else { continue }
            // most of a MuJoCo task's names are mpcd's, made from the model's: say how, so that the
            // joint or actuator to rename can be found
            let made = name == "mujoco" ? ": mpcd names the state qpos:<joint> and qvel:<joint> (an unnamed joint joint<i>, a ball or free joint's values <joint>_<i>) and the action by its actuator (an unnamed one ctrl<i>); rename one in the model" : ""
            throw ConfigurationError(key: file, reason: problem + made)
        }
        // the model step sets the tick rate: 0.1 to 10000 Hz, as [server] rate_hz allows
        guard task.dynamics.dt >= minimumStep, task.dynamics.dt <= maximumStep else {
            throw ConfigurationError(key: parameters.keyPath("dt"), reason: "expected seconds in [0.0001, 10] (a rate of 0.1 to 10000 Hz), got \(task.dynamics.dt)")
        }
        return task
    }
}
