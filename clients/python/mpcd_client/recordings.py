"""mpcd's tick recordings (docs/recording.md) as training data: the planner's plans, the labels
distillation needs, with the network inputs they belong to.

    data = read_recordings(["/var/lib/mpcd/recordings"])   # files or folders of mpcd-*.arrows
    data.inputs, data.plan_mean, data.plan_std, data.plan_cost
    policy = read_recordings(paths, steps=1)                # only the first step of each plan kept

Needs pyarrow (`pip install 'mpcd-client[recording]'`).
"""
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .torch_networks import STATE_DIMENSIONS, features

FALLBACK, STALE = 4, 8
# larger dimensions than any task mpcd plans: metadata beyond them is not a recording of mpcd's
MAX_DIMENSION, MAX_HORIZON = 4096, 4096


class RecordingError(ValueError):
    """A recording that cannot be learned from, with the file and the reason."""


@dataclass
class Recordings:
    task: str
    state_dimension: int
    action_dimension: int
    horizon: int
    # one row per planned tick (stale, fallback and unfinished rows are left out)
    states: np.ndarray
    inputs: np.ndarray
    plan_mean: np.ndarray
    plan_std: np.ndarray
    plan_cost: np.ndarray
    # the iterations each plan ran (0: the plan is the prior's proposal, not refined)
    iterations: np.ndarray
    files: list = field(default_factory=list)
    skipped: int = 0
    # per file: the recorded configuration's [planner] discount and [value] file (a value learned
    # from plan_cost carries both)
    discounts: list = field(default_factory=list)
    value_files: list = field(default_factory=list)
    # the task's action bounds, from the metadata (None in files from before they were recorded)
    action_low: list = None
    action_high: list = None

    @property
    def rows(self):
        return len(self.states)


def recording_files(paths):
    """The recording files named, folders expanded to their mpcd-*.arrows, each file once."""
    files, seen = [], set()
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.glob("mpcd-*.arrows"))
            if not found:
                raise RecordingError(f"{path}: a folder without recordings (mpcd-*.arrows)")
        elif path.is_file():
            found = [path]
        else:
            raise RecordingError(f"{path}: no such file or folder")
        for file in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                files.append(file)
    if not files:
        raise RecordingError("no recordings given")
    return files


def _dimension(meta, key, path, limit):
    text = meta.get(key)
    if text is None:
        raise RecordingError(f"{path}: not an mpcd recording (its metadata has no {key})")
    if not text.isdigit() or not 1 <= int(text) <= limit:
        raise RecordingError(f"{path}: metadata {key} is {text!r}, not a whole number from 1 to {limit}")
    return int(text)


def _check_columns(table, path, n, m, h):
    """The columns training reads, of the types and widths mpcd writes, without nulls."""
    import pyarrow as pa

    def fixed(width):
        return lambda t: pa.types.is_fixed_size_list(t) and t.list_size == width and t.value_type == pa.float32()

    wanted = {"state": (fixed(n), f"{n} float32 values"), "plan_mean": (fixed(h * m), f"{h * m} float32 values"),
              "plan_std": (fixed(h * m), f"{h * m} float32 values"), "plan_cost": (lambda t: t == pa.float64(), "float64"),
              "flags": (lambda t: t == pa.uint32(), "uint32"), "iterations": (lambda t: t == pa.float64(), "float64")}
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        hint = " (recorded by an mpcd older than the plan_std column: record again)" if missing == ["plan_std"] else ""
        raise RecordingError(f"{path}: the recording has no {', '.join(missing)} column{hint}")
    for name, (fits, kind) in wanted.items():
        column = table.column(name)
        if not fits(column.type):
            raise RecordingError(f"{path}: column {name} is {column.type}, expected {kind} (the metadata's shape)")
        if column.null_count or (pa.types.is_fixed_size_list(column.type) and column.combine_chunks().flatten().null_count):
            raise RecordingError(f"{path}: column {name} has null values")


def _floats(table, name, width):
    """A fixed-size-list float32 column as a (rows, width) array."""
    values = table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float32).reshape(-1, width)


def _planner(meta, path):
    """The recorded configuration's discount γ and [value] file."""
    try:
        configuration = tomllib.loads(meta.get("configuration", ""))
    except tomllib.TOMLDecodeError as error:
        raise RecordingError(f"{path}: the recorded configuration does not parse ({error})") from None
    planner = configuration.get("planner", {})
    discount = planner.get("discount", 1.0) if isinstance(planner, dict) else None
    if isinstance(discount, bool) or not isinstance(discount, (int, float)) or not 0 < discount <= 1:
        raise RecordingError(f"{path}: the recorded [planner] discount is {discount!r}, not a number in (0, 1]")
    return float(discount), meta.get("value_file", "")


def _bounds(meta, path, m):
    """The metadata's action bounds (m finite numbers each, low below high), or None without them."""
    if "action_low" not in meta and "action_high" not in meta:
        return None
    try:
        low = [float(v) for v in meta.get("action_low", "").split(",")]
        high = [float(v) for v in meta.get("action_high", "").split(",")]
    except ValueError:
        low = high = []
    if len(low) != m or len(high) != m or not all(np.isfinite(low + high)) or not all(a < b for a, b in zip(low, high)):
        raise RecordingError(f"{path}: metadata action_low and action_high must be {m} finite numbers each, low below high")
    return low, high


def _read(path, steps):
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(pa.OSFile(str(path))).read_all()
    except (pa.ArrowException, OSError) as error:
        raise RecordingError(f"{path}: not an Arrow IPC stream mpcd wrote ({error})") from None
    meta = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in (table.schema.metadata or {}).items()}
    if "task" not in meta:
        raise RecordingError(f"{path}: not an mpcd recording (its metadata has no task)")
    n = _dimension(meta, "state_dimension", path, MAX_DIMENSION)
    m = _dimension(meta, "action_dimension", path, MAX_DIMENSION)
    h = _dimension(meta, "horizon", path, MAX_HORIZON)
    task = meta["task"]
    if task in STATE_DIMENSIONS and n != STATE_DIMENSIONS[task]:
        raise RecordingError(f"{path}: a {task} recording with {n} state values, which mpcd's {task} does not have")
    if "feature_names" in meta and task != "pendulum" and len(meta["feature_names"].split(",")) != n:
        raise RecordingError(f"{path}: {len(meta['feature_names'].split(','))} network inputs for {n} state values: "
                             "a task whose features are not its state, which mpcd_client.torch_networks.features does not know")
    _check_columns(table, path, n, m, h)
    keep = max(1, (h if steps is None else min(steps, h)) * m)
    state = _floats(table, "state", n)
    mean, std = _floats(table, "plan_mean", h * m)[:, :keep], _floats(table, "plan_std", h * m)[:, :keep]
    cost = table.column("plan_cost").to_numpy().astype(np.float64)
    flags = table.column("flags").to_numpy().astype(np.uint32)
    iterations = table.column("iterations").to_numpy().astype(np.float64)
    return (task, n, m, h), meta, (state, mean, std, cost, flags, iterations)


def read_recordings(paths, steps=None):
    """Every planned tick of the recordings at `paths`. They must be of one task and shape.
    `steps`: the plan steps to keep of plan_mean and plan_std (all H by default; 1 for a policy).
    Rows left out (counted in `skipped`): stale and fallback replies, and plans that are not finite,
    have a std that is not positive, or a cost beyond 1e30."""
    files = recording_files(paths)
    columns = {key: [] for key in ("state", "plan_mean", "plan_std", "plan_cost", "iterations")}
    first, skipped, discounts, value_files, bounds = None, 0, [], [], None
    for path in files:
        shape, meta, (state, mean, std, cost, flags, iterations) = _read(path, steps)
        if first is None:
            first = shape
        elif shape != first:
            raise RecordingError(f"{path}: a {shape[0]} recording with {shape[1]} states, {shape[2]} actions and horizon "
                                 f"{shape[3]}, unlike {files[0]} ({first[0]}, {first[1]}, {first[2]}, {first[3]}): "
                                 "learn from one task's recordings at a time")
        discount, value_file = _planner(meta, path)
        these = _bounds(meta, path, shape[2])
        if these is not None:
            if bounds is not None and these != bounds:
                raise RecordingError(f"{path}: action bounds {these} unlike the other files' {bounds}")
            bounds = these
        discounts.append(discount)
        value_files.append(value_file)
        with np.errstate(invalid="ignore"):
            usable = ((flags & (STALE | FALLBACK)) == 0) & np.isfinite(state).all(axis=1) & np.isfinite(mean).all(axis=1) \
                & np.isfinite(std).all(axis=1) & (std > 0).all(axis=1) & np.isfinite(cost) & (np.abs(cost) < 1e30) \
                & np.isfinite(iterations)
        skipped += int((~usable).sum())
        for key, values in (("state", state), ("plan_mean", mean), ("plan_std", std), ("plan_cost", cost), ("iterations", iterations)):
            columns[key].append(values[usable])
    task, n, m, h = first
    states = np.concatenate(columns["state"])
    if len(states) == 0:
        raise RecordingError(f"no planned ticks in {len(files)} file(s) ({skipped} stale, fallback or without a plan)")
    return Recordings(task=task, state_dimension=n, action_dimension=m, horizon=h, states=states,
                      inputs=features(task, states), plan_mean=np.concatenate(columns["plan_mean"]),
                      plan_std=np.concatenate(columns["plan_std"]), plan_cost=np.concatenate(columns["plan_cost"]),
                      iterations=np.concatenate(columns["iterations"]), files=[str(f) for f in files], skipped=skipped,
                      discounts=discounts, value_files=value_files,
                      action_low=bounds[0] if bounds else None, action_high=bounds[1] if bounds else None)
