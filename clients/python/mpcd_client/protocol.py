"""mpcd wire protocol, version 1 (docs/protocol.md): encoding and decoding only, no sockets.

Every message is a multipart ZeroMQ message. Frame 0 is a 32-byte little-endian header,
``magic "MPCD" | version u16 | type u16 | a u64 | b u64 | c u32 | d u32``; vectors follow as
frames of little-endian float64.
"""
import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

VERSION = 1
HEADER = struct.Struct("<4sHHQQII")

HELLO, HELLO_REPLY, OBSERVATION, ACTION, ERROR, BYE, PARAMETERS, PARAMETERS_REPLY = 1, 2, 3, 4, 5, 6, 7, 8

ERROR_NAMES = {
    1: "malformed",
    2: "unsupported_version",
    3: "unknown_type",
    4: "wrong_dimension",
    5: "non_finite",
    6: "too_many_sessions",
    7: "stale",
    8: "internal",
    9: "invalid_parameter",
    10: "task_changed",
}
TASK_CHANGED = 10

FLAG_ADVANCED, FLAG_TRUNCATED, FLAG_FALLBACK = 1, 2, 4


def header(kind, a=0, b=0, c=0, d=0):
    return HEADER.pack(b"MPCD", VERSION, kind, a, b, c, d)


def hello():
    return [header(HELLO)]


def bye():
    return [header(BYE)]


def observation(sequence, state, timestamp=0.0, task=0):
    """An observation frame pair. ``timestamp`` is seconds on this host's CLOCK_MONOTONIC
    (``time.monotonic()``), or 0 when unknown; the daemon uses it only when configured to.
    ``task``: the hello's ``task_fingerprint``, to be refused with ``task_changed`` once the
    daemon's task is another (0: not asked)."""
    stamp = struct.unpack("<Q", struct.pack("<d", float(timestamp)))[0]
    return [header(OBSERVATION, sequence, stamp, task), np.ascontiguousarray(state, dtype="<f8").tobytes()]


def parameters(sequence, values, task=0):
    """A parameters message: ``values`` maps names to a number or a sequence of numbers. Non-finite
    values are sent as they are (JSON's NaN, Infinity), for the daemon to refuse by name.
    ``task`` as for observation()."""
    body = {name: np.asarray(value, dtype=float).ravel().tolist() for name, value in values.items()}
    return [header(PARAMETERS, sequence, 0, task), json.dumps(body).encode("utf-8")]


@dataclass
class ParametersReply:
    """The session's parameters in force after a parameters message."""
    sequence: int
    values: dict


@dataclass
class ActionReply:
    observation_sequence: int
    tick: int
    flags: int
    action: np.ndarray
    plan: np.ndarray
    diagnostics: dict = field(default_factory=dict)

    @property
    def advanced(self):
        return bool(self.flags & FLAG_ADVANCED)

    @property
    def truncated(self):
        return bool(self.flags & FLAG_TRUNCATED)

    @property
    def fallback(self):
        return bool(self.flags & FLAG_FALLBACK)


@dataclass
class ErrorReply:
    sequence: int
    code: int
    message: str

    @property
    def name(self):
        return ERROR_NAMES.get(self.code, f"code_{self.code}")


class ProtocolError(Exception):
    """A reply that does not follow the protocol."""


def _json_object(frames, what):
    """The JSON object in a reply's second frame, or ProtocolError saying what is wrong."""
    if len(frames) < 2:
        raise ProtocolError(f"{what} without its JSON frame")
    try:
        value = json.loads(frames[1].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ProtocolError(f"{what} whose JSON frame cannot be read: {type(error).__name__}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} whose JSON is a {type(value).__name__}, not an object")
    return value


def _finite(x):
    """Whether a JSON number is a finite float64 (an integer of 400 digits is not, and numpy
    raises TypeError rather than say so)."""
    try:
        return math.isfinite(float(x))
    except OverflowError:
        return False


def _shown(value, limit=200):
    """A value as an error message quotes it: its repr, cut to `limit` characters (a hostile
    hello's list may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def checked_hello(info):
    """The hello reply's fields the client and the bridge act on, each of its type and size, or
    ProtocolError naming the first that is not (docs/protocol.md, "Hello")."""
    def integer(key, least):
        value = info.get(key)
        if type(value) is not int or value < least:
            raise ProtocolError(f"a hello whose {key} is {_shown(value)}, not an integer of at least {least}")
        return value

    def strings(key, length=None, required=True):
        value = info.get(key)
        if value is None and not required:
            return
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value) or (length is not None and len(value) != length):
            raise ProtocolError(f"a hello whose {key} is {_shown(value)}, not a list of {length if length is not None else 'some'} names")

    def numbers(key, length):
        value = info.get(key)
        if not isinstance(value, list) or len(value) != length or not all(type(x) in (int, float) and _finite(x) for x in value):
            raise ProtocolError(f"a hello whose {key} is {_shown(value)}, not a list of {length} finite numbers")
        return np.asarray(value, dtype=float)

    if not isinstance(info.get("task"), str):
        raise ProtocolError(f"a hello whose task is {_shown(info.get('task'))}, not a name")
    strings("state_names", integer("state_dim", 1))
    m = integer("action_dim", 1)
    strings("action_names", m)
    if np.any(numbers("action_low", m) > numbers("action_high", m)):
        raise ProtocolError(f"a hello whose action_low {_shown(info['action_low'])} is above its action_high {_shown(info['action_high'])}")
    strings("diagnostics", required=False)
    forms = info.get("observation_forms", [])
    if not isinstance(forms, list) or not all(isinstance(f, dict) and isinstance(f.get("name"), str)
                                              and isinstance(f.get("components"), list)
                                              and all(isinstance(c, str) for c in f["components"]) for f in forms):
        raise ProtocolError(f"a hello whose observation_forms is {_shown(forms)}, not a list of named component lists")
    fingerprint = info.get("task_fingerprint", 0)  # absent from daemons before it
    if type(fingerprint) is not int or not 0 <= fingerprint < 2**32:
        raise ProtocolError(f"a hello whose task_fingerprint is {_shown(fingerprint)}, not a 32-bit unsigned integer")
    if "planner" in info and not isinstance(info["planner"], dict):
        raise ProtocolError(f"a hello whose planner is {_shown(info['planner'])}, not an object")
    return info


def _float64s(frame, what):
    if len(frame) % 8:
        raise ProtocolError(f"{what} of {len(frame)} bytes, not whole float64s")
    return np.frombuffer(frame, dtype="<f8")


def decode(frames, action_dim=None, diagnostic_names=()):
    """Decodes a reply: a dict (hello), an ActionReply or an ErrorReply. A reply that breaks the
    protocol (docs/protocol.md), an action that is not finite or of another size than the hello
    said included, raises ProtocolError: it is never handed on as an action."""
    if not frames or len(frames[0]) != HEADER.size:
        raise ProtocolError("reply without a 32-byte header")
    magic, version, kind, a, b, c, d = HEADER.unpack(frames[0])
    if magic != b"MPCD":
        raise ProtocolError(f"bad magic {magic!r}")
    if version != VERSION:
        raise ProtocolError(f"daemon speaks protocol {version}, this client {VERSION}")
    if kind == HELLO_REPLY:
        return checked_hello(_json_object(frames, "hello reply"))
    if kind == PARAMETERS_REPLY:
        return ParametersReply(a, _json_object(frames, "parameters reply"))
    if kind == ERROR:
        return ErrorReply(sequence=a, code=c, message=frames[1].decode("utf-8", "replace") if len(frames) > 1 else "")
    if kind == ACTION:
        if len(frames) != 4:
            raise ProtocolError(f"action reply with {len(frames)} frames, expected 4")
        action = _float64s(frames[1], "an action")
        plan = _float64s(frames[2], "a plan")
        values = _float64s(frames[3], "diagnostics")
        m = action_dim or len(action)
        if len(action) != m or m == 0:
            raise ProtocolError(f"an action of {len(action)} values; the daemon's hello said {action_dim}")
        if not np.all(np.isfinite(action)):
            raise ProtocolError(f"an action that is not finite: {action.tolist()}")
        if len(plan) % m:
            raise ProtocolError(f"a plan of {len(plan)} values, not whole actions of {m}")
        names = list(diagnostic_names) or [f"d{i}" for i in range(len(values))]
        return ActionReply(a, b, c, action, plan.reshape(-1, m), dict(zip(names, values.tolist())))
    raise ProtocolError(f"unexpected reply type {kind}")
