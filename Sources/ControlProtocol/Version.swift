/// mpcd's version: `--version` of both commands, the hello reply, the status reply and metrics.
public let mpcdVersion = "0.1.0"
