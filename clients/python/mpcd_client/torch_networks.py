"""mpcd's network in PyTorch, and its weights file (safetensors with the architecture in __metadata__).

mpcd's network (Sources/Models/AmortisedNetwork.swift, ValueNetwork.swift): Linear layers `hidden.i`
with tanh or ReLU, then two Linear heads `mean` and `log_std`. For a policy or an amortised plan the
action-space mean is `centre + half_range * tanh(mean)` and the std
`half_range * exp(clamp(log_std, -5, 2))`; a value is `value_scale * mean` (the log-std head is
carried, unused). Networks take the task's features of the state (`features`).
"""
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Inputs (features) and actions of the built-in tasks, with the action bounds.
TASKS = {"pendulum": (3, 1, [-2.0], [2.0]), "mountain_car": (2, 1, [-1.0], [1.0]), "cartpole": (4, 1, [-10.0], [10.0]),
         "point_mass": (2, 1, [-2.0], [2.0]), "unicycle": (3, 2, [-0.2, -1.5], [1.0, 1.5])}
# The task's state values (what a recording's `state` column holds) where they differ from the inputs.
STATE_DIMENSIONS = {"pendulum": 2, "mountain_car": 2, "cartpole": 4, "point_mass": 2, "unicycle": 3}
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
# MLPArchitecture.maxParameters: mpcd refuses a larger network
MAX_PARAMETERS = 1 << 24


def parameter_count(inputs, hidden, outputs):
    """Weights and biases of a network with two heads of `outputs` each."""
    widths = [inputs] + list(hidden)
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:])) + 2 * (widths[-1] + 1) * outputs


def features(task, states):
    """The network inputs mpcd computes from task states (rows): the pendulum's angle becomes its
    cosine and sine (Pendulum.swift); every other task's state is its own features."""
    states = np.asarray(states, dtype=np.float32)
    if task == "pendulum":
        return np.stack([np.cos(states[:, 0]), np.sin(states[:, 0]), states[:, 1]], axis=1).astype(np.float32)
    return states


class MpcdMLP(nn.Module):
    def __init__(self, inputs, hidden, outputs, activation="tanh"):
        super().__init__()
        widths = [inputs] + list(hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.mean = nn.Linear(widths[-1], outputs)
        self.log_std = nn.Linear(widths[-1], outputs)
        self.activation = activation

    def forward(self, x):
        act = torch.tanh if self.activation == "tanh" else torch.relu
        for layer in self.hidden:
            x = act(layer(x))
        return self.mean(x), self.log_std(x)

    def squashed(self, x, low, high):
        """The action-space mean and std of a policy or plan (low, high: one action's bounds)."""
        raw_mean, raw_log_std = self.forward(x)
        horizon = raw_mean.shape[-1] // len(low)
        return squash(raw_mean, raw_log_std, low.repeat(horizon), high.repeat(horizon))


def squash(raw_mean, raw_log_std, low, high):
    """The network's two heads as an action-space mean and std (low, high: bounds of every output)."""
    centre, half = (high + low) / 2, (high - low) / 2
    return centre + half * torch.tanh(raw_mean), half * torch.exp(torch.clamp(raw_log_std, LOG_STD_MIN, LOG_STD_MAX))


def save(module, path, kind, task, horizon=1, version=0, actions=None, extra=None):
    """Writes `module` (an MpcdMLP) as an mpcd weights file: a policy, a plan (`horizon` steps of
    `actions` each) or a value (`extra` carries value_scale, discount and min_value)."""
    tensors = {}
    for i, layer in enumerate(module.hidden):
        tensors[f"hidden.{i}.weight"] = layer.weight
        tensors[f"hidden.{i}.bias"] = layer.bias
    for name in ("mean", "log_std"):
        tensors[f"{name}.weight"] = getattr(module, name).weight
        tensors[f"{name}.bias"] = getattr(module, name).bias
    metadata = {
        "format": "mpcd-network", "format_version": "1", "kind": kind, "task": task,
        "inputs": str(module.hidden[0].in_features if len(module.hidden) else module.mean.in_features),
        "hidden": ",".join(str(layer.out_features) for layer in module.hidden),
        "outputs": str(module.mean.out_features), "activation": module.activation, "version": str(version),
    }
    if kind != "value":
        metadata |= {"horizon": str(horizon), "actions": str(actions if actions is not None else TASKS[task][1]),
                     "log_std_min": str(LOG_STD_MIN), "log_std_max": str(LOG_STD_MAX)}
    metadata |= extra or {}
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        data = tensors[name].detach().cpu().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def save_beside(module, path, *args, **kwargs):
    """`save`, into a file beside `path` that is then renamed over it: a reader never sees half a
    file, and a failed write leaves none behind. Readable by all (0644), as `save`'s own files are."""
    handle, temporary = tempfile.mkstemp(dir=Path(path).resolve().parent, prefix=".mpcd-", suffix=".safetensors")
    os.close(handle)
    try:
        save(module, temporary, *args, **kwargs)
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def load(path):
    """An mpcd weights file as (MpcdMLP, metadata). Raises ValueError naming what is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read(8 + (1 << 20) + 4 * 2 * MAX_PARAMETERS + 1)
    except OSError as error:
        raise ValueError(f"{path}: {error.strerror or error}") from None

    def fail(reason):
        return ValueError(f"{path}: not a usable mpcd network ({reason})")

    if len(data) < 8:
        raise fail("shorter than a safetensors header")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(len(data) - 8, 1 << 20):
        raise fail(f"its header claims {length} bytes")
    try:
        header = json.loads(data[8:8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise fail(f"its header is not JSON: {error}") from None
    metadata = header.pop("__metadata__", None) if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise fail("no __metadata__ of strings")
    if metadata.get("format") != "mpcd-network":
        raise fail("__metadata__ format is not mpcd-network")
    try:
        inputs, outputs = int(metadata["inputs"]), int(metadata["outputs"])
        hidden = [int(w) for w in metadata.get("hidden", "").split(",") if w]
        int(metadata.get("version", "0"))
    except (KeyError, ValueError) as error:
        raise fail(f"__metadata__ inputs, outputs, hidden and version must be whole numbers ({error})") from None
    if metadata.get("activation") not in ("tanh", "relu"):
        raise fail(f"__metadata__ activation is {metadata.get('activation')!r}, not tanh or relu")
    if min([inputs, outputs] + hidden) < 1 or parameter_count(inputs, hidden, outputs) > MAX_PARAMETERS:
        raise fail(f"a network of inputs {inputs}, hidden {hidden}, outputs {outputs} is empty or larger than mpcd takes")
    module = MpcdMLP(inputs, hidden, outputs, metadata["activation"])
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    body, state = data[8 + length:], {}
    for name, entry in header.items():
        if name not in expected:
            raise fail(f"unexpected tensor {name}")
        if not isinstance(entry, dict) or entry.get("dtype") != "F32":
            raise fail(f"tensor {name} is not F32")
        if entry.get("shape") != list(expected[name]):
            raise fail(f"tensor {name} has shape {entry.get('shape')!r}, expected {list(expected[name])}")
        offsets = entry.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= len(body) and offsets[1] - offsets[0] == 4 * int(np.prod(expected[name]))):
            raise fail(f"tensor {name} has offsets {offsets!r}, not those of shape {list(expected[name])}")
        values = np.frombuffer(body[offsets[0]:offsets[1]], dtype="<f4").reshape(expected[name])
        if not np.isfinite(values).all():
            raise fail(f"tensor {name} has values that are not finite")
        state[name] = torch.from_numpy(values.copy())
    if set(state) != set(expected):
        raise fail(f"tensor {sorted(set(expected) - set(state))[0]} is missing")
    module.load_state_dict(state)
    return module, metadata
