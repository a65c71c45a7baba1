"""The Python client and the Gymnasium bridge against something on the endpoint that is not a
well-behaved mpcd (another program, a daemon for another environment): every reply that breaks
the protocol is a clear error, and no action that is not finite, of another shape or beyond the
environment's bounds is ever applied to the environment."""
import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import fake_router, free_port

HEADER = struct.Struct("<4sHHQQII")
HELLO = {"protocol": 1, "daemon": "fake", "task": "pendulum", "mode": "lockstep", "rate_hz": 20, "dt": 0.05, "state_dim": 2,
         "state_names": ["theta", "theta_dot"], "action_dim": 1, "action_names": ["torque"], "action_low": [-2], "action_high": [2],
         "observation_forms": [{"name": "gymnasium", "components": ["cos_theta", "sin_theta", "theta_dot"]}], "plan_steps": 5,
         "horizon": 32, "diagnostics": ["iterations", "cost", "compute_seconds"], "error_codes": {},
         "planner": {"likelihood": "mppi", "samples": 1, "iterations": 1}, "parameters": []}


def header(kind, a=0, b=0):
    return HEADER.pack(b"MPCD", 1, kind, a, b, 0, 0)


def action_frames(sequence, action, plan=np.zeros(5), diagnostics=np.zeros(3)):
    return [header(4, sequence, 1), np.asarray(action, "<f8").tobytes(), np.asarray(plan, "<f8").tobytes(),
            np.asarray(diagnostics, "<f8").tobytes()]


# what the fake sends: to a hello (kind 1), or to an observation (kind 3) after a proper hello
HELLOS = {
    "hello that is not UTF-8": [header(2), b"\xff\xfe not json"],
    "hello that is a list": [header(2), b"[1, 2]"],
    "hello without its frame": [header(2)],
    "hello nested 100000 deep": [header(2), b"[" * 100_000 + b"]" * 100_000],
    "short header": [b"short"],
    # each a proper hello with one field wrong: the bridge ended in a TypeError traceback on the
    # first, and ran on the second applying 1-value actions to whatever it was told
    **{f"hello with {key} = {json.dumps(value)[:40]}": [header(2), json.dumps({**HELLO, key: value}).encode()]
       for key, value in (("diagnostics", 5), ("action_dim", 0), ("action_dim", -1), ("action_dim", True), ("action_dim", 1.5),
                          ("action_names", ["a", "b"]), ("action_low", [-2, -2]), ("action_high", ["2"]),
                          ("action_low", [3]), ("state_dim", 0), ("task", None), ("observation_forms", {"name": 1}),
                          ("diagnostics", ["iterations", 5]), ("planner", []),
                          # a fingerprint the client could not send back in a 32-bit header word
                          ("task_fingerprint", -1), ("task_fingerprint", 2 ** 32), ("task_fingerprint", "1"), ("task_fingerprint", 1.0),
                          # well formed, but a daemon planning beyond Pendulum-v1's torque of 2: refused before the first step
                          ("action_low", [-3]), ("action_high", [2.5]),
                          # JSON integers too big for a float64 (numpy's isfinite raised TypeError on them)
                          ("action_low", [-(10 ** 400)]), ("action_high", [10 ** 30]),
                          # a megabyte of names: the error quotes 200 characters of it
                          ("action_names", ["x" * 1000] * 1000))
    },
}
ACTIONS = {
    "NaN action": lambda seq: action_frames(seq, [np.nan]),
    "infinite action": lambda seq: action_frames(seq, [np.inf]),
    "action beyond the bounds": lambda seq: action_frames(seq, [1e308]),
    "action of 3 values": lambda seq: action_frames(seq, [0.5, 7.0, 9.0]),
    "empty action": lambda seq: action_frames(seq, []),
    "action of 7 bytes": lambda seq: [header(4, seq, 1), b"1234567", np.zeros(5).tobytes(), np.zeros(3).tobytes()],
    "action reply of 2 frames": lambda seq: [header(4, seq, 1), np.array([0.5]).tobytes()],
    "plan of 12 bytes": lambda seq: [header(4, seq, 1), np.array([0.5]).tobytes(), b"x" * 12, np.zeros(3).tobytes()],
}


def answer(mode):
    """What the fake sends in `mode` to a request's frames (None: nothing, to a message it ignores)."""
    def reply(frames):
        kind, sequence = HEADER.unpack(frames[0])[2], HEADER.unpack(frames[0])[3]
        if kind == 1:
            return HELLOS.get(mode, [header(2), json.dumps(HELLO).encode()])
        if kind == 3:
            return ACTIONS[mode](sequence) if mode in ACTIONS else action_frames(sequence, [0.5])
        return None
    return reply


def run_bridge_against(mode):
    """`python -m mpcd_client.gym` for five steps against the fake answering in `mode`."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with fake_router(endpoint, answer(mode)):
        return subprocess.run([sys.executable, "-m", "mpcd_client.gym", "--episodes", "1", "--max-steps", "5", "--endpoint", endpoint,
                               "--timeout", "2", "--csv", "/dev/null"], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mode", [*HELLOS, *ACTIONS])
def test_the_gym_bridge_stops_with_a_clear_error_on_a_reply_that_breaks_the_protocol(mode):
    result = run_bridge_against(mode)
    assert result.returncode == 2, (mode, result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, (mode, result.stderr[:300])
    assert len(result.stderr) < 2000, (mode, len(result.stderr))
    assert "mean return" not in result.stdout, (mode, result.stdout)


def test_the_fake_daemon_serves_a_proper_run():
    """The fake above, answering as mpcd would: the run completes (so each refusal above is the
    bad reply's doing)."""
    result = run_bridge_against("proper")
    assert result.returncode == 0 and "mean return" in result.stdout, result.stderr
