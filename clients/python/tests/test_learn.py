"""Training mpcd's networks from recordings with PyTorch, on one process and with torchrun's
DistributedDataParallel (mpcd_client.learn; docs/recording.md)."""
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from conftest import MPCD, REPO
from mpcd_client import Controller
from mpcd_client.torch_networks import TASKS, features, load
from test_recording import default_with, recordings, run_pendulum, wait_for

PYTHON = sys.executable
TORCHRUN = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
CLIENT = REPO / "clients" / "python"


def learn(*args, processes=1, check=True):
    command = (TORCHRUN if processes > 1 else [PYTHON]) + ["-m", "mpcd_client.learn", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=CLIENT)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Four pendulum episodes of 100 ticks through the embedded default, recorded."""
    tmp_path = tmp_path_factory.mktemp("recorded")
    folder = tmp_path / "recordings"
    config, _ = default_with(tmp_path, f'directory = "{folder}"\nenabled = true\n')
    from conftest import Daemon

    daemon = Daemon(["--config", str(config)], tmp_path)
    try:
        run_pendulum(daemon.endpoint, episodes=4, steps=100, identity=b"learned")
        assert wait_for(lambda: daemon.status()["recording"]["written"] == 400)
    finally:
        daemon.stop()
    return folder


def test_two_processes_under_torchrun_take_the_single_process_steps_and_mpcd_loads_the_result(recorded, tmp_path, start_daemon):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    learn(recorded, "--epochs", 4, "--batch", 64, "--out", tmp_path / "one.safetensors", "--summary", one)
    result = learn(recorded, "--epochs", 4, "--batch", 64, "--out", tmp_path / "two.safetensors", "--summary", two, processes=2)
    assert "2 process(es)" in result.stdout
    single, ddp = json.loads(one.read_text()), json.loads(two.read_text())
    assert single["rows"] == ddp["rows"] == 400 and ddp["processes"] == 2
    assert single["rows_per_process"] == 64 and ddp["rows_per_process"] == 32
    # the same steps: the losses agree to float rounding, and they fall
    assert np.allclose(single["losses"], ddp["losses"], rtol=1e-5, atol=0)
    assert ddp["losses"][-1] < ddp["losses"][0]
    a, _ = load(tmp_path / "one.safetensors")
    b, meta = load(tmp_path / "two.safetensors")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-5), name
    # a running daemon takes it without restarting, and acts as PyTorch's network does
    policy_alone = tmp_path / "alone.toml"
    policy_alone.write_text('[task]\nname = "pendulum"\n[planner]\nsamples = 64\nhorizon = 32\niterations = 0\n'
                            '[prior]\nfile = "embedded:pendulum_policy"\n')
    daemon = start_daemon("--config", str(policy_alone))
    daemon.mpcctl("policy", "load", str(tmp_path / "two.safetensors"))
    prior = daemon.status()["prior"]
    assert prior["file"] == str(tmp_path / "two.safetensors") and prior["network_version"] == int(meta["version"]) == 1
    states = np.random.default_rng(5).uniform([-np.pi, -4], [np.pi, 4], size=(20, 2)).astype(np.float32)
    low, high = (torch.tensor(v) for v in TASKS["pendulum"][2:])
    with torch.no_grad():
        expected, _ = b.squashed(torch.from_numpy(features("pendulum", states)), low, high)
    with Controller(daemon.endpoint) as client:
        for state, want in zip(states, expected.numpy()):
            client.reset()
            assert np.allclose(client.act(state), want, atol=1e-5), state


def test_a_plan_and_a_value_from_recordings_pass_mpcds_check(recorded, tmp_path):
    learn(recorded, "--kind", "plan", "--epochs", 1, "--out", tmp_path / "plan.safetensors")
    learn(recorded, "--kind", "value", "--epochs", 1, "--out", tmp_path / "value.safetensors")
    plan, meta = load(tmp_path / "plan.safetensors")
    assert meta["kind"] == "plan" and meta["horizon"] == "32" and plan.mean.out_features == 32
    _, value = load(tmp_path / "value.safetensors")
    assert value["kind"] == "value" and float(value["value_scale"]) > 0 and value["min_value"] == "0.0"
    for table in (f'[prior]\nfile = "{tmp_path / "plan.safetensors"}"\n', f'[value]\nfile = "{tmp_path / "value.safetensors"}"\n'):
        config = tmp_path / "check.toml"
        config.write_text('[task]\nname = "pendulum"\n[planner]\nsamples = 64\nhorizon = 32\n' + table)
        check = subprocess.run([str(MPCD), "--check", "--config", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_fine_tuning_continues_from_a_network_and_counts_its_version(recorded, tmp_path):
    shipped = REPO / "deploy" / "networks" / "pendulum_policy.safetensors"
    learn(recorded, "--init", shipped, "--epochs", 1, "--lr", 1e-4, "--out", tmp_path / "tuned.safetensors")
    original, before = load(shipped)
    tuned, after = load(tmp_path / "tuned.safetensors")
    assert int(after["version"]) == int(before["version"]) + 1 and after["hidden"] == before["hidden"]
    # a small step from the shipped weights, not new ones
    changes = [float((a - b).abs().max()) for a, b in zip(original.state_dict().values(), tuned.state_dict().values())]
    assert 0 < max(changes) < 0.05, changes


def test_a_value_trains_under_torchrun_and_the_refined_only_flag_leaves_unplanned_ticks_out(recorded, tmp_path):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    learn(recorded, "--kind", "value", "--epochs", 2, "--batch", 64, "--out", tmp_path / "v1.safetensors", "--summary", one)
    learn(recorded, "--kind", "value", "--epochs", 2, "--batch", 64, "--out", tmp_path / "v2.safetensors", "--summary", two, processes=2)
    assert np.allclose(json.loads(one.read_text())["losses"], json.loads(two.read_text())["losses"], rtol=1e-5, atol=0)
    # the embedded default's adaptive rule runs no iterations on some ticks: their plan is the prior's
    result = learn(recorded, "--refined-only", "--epochs", 1, "--batch", 16, "--out", tmp_path / "r.safetensors", "--summary", one)
    refined = json.loads(one.read_text())["rows"]
    left_out = int(result.stdout.split(" unrefined")[0].rsplit(" ", 1)[-1])
    assert left_out > 0 and refined + left_out == 400, result.stdout
    # a folder and a file in it: each tick once
    learn(recorded, recordings(recorded)[0], "--epochs", 1, "--out", tmp_path / "d.safetensors", "--summary", one)
    assert json.loads(one.read_text())["rows"] == 400


def crafted(path, n=2, m=1, h=4, rows=8, task="pendulum", flags=0, plan_std=True, metadata=None, change=None, extra=None):
    """A recording-shaped Arrow stream (the columns training reads), `change` replacing columns."""
    rng = np.random.default_rng(0)
    columns = {"state": pa.array(list(rng.normal(size=(rows, n)).astype(np.float32)), pa.list_(pa.float32(), n)),
               "plan_mean": pa.array(list(rng.uniform(-1, 1, size=(rows, h * m)).astype(np.float32)), pa.list_(pa.float32(), h * m)),
               "plan_cost": pa.array(rng.uniform(0, 10, rows)), "flags": pa.array([flags] * rows, pa.uint32()),
               "iterations": pa.array(np.ones(rows))}
    if plan_std:
        columns["plan_std"] = pa.array([np.full(h * m, 0.3, np.float32)] * rows, pa.list_(pa.float32(), h * m))
    columns |= change or {}
    meta = metadata if metadata is not None else {"task": task, "state_dimension": str(n), "action_dimension": str(m),
                                                  "horizon": str(h)} | (extra or {})
    table = pa.table(columns).replace_schema_metadata(meta)
    with pa.ipc.new_stream(str(path), table.schema) as writer:
        writer.write_table(table)
    return path


@pytest.mark.parametrize("files, message", [
    (lambda t: [t / "nowhere"], "no such file or folder"),
    (lambda t: [t], "a folder without recordings"),
    (lambda t: [t / "garbage.arrows"], "not an Arrow IPC stream"),
    (lambda t: [crafted(t / "a.arrows"), crafted(t / "b.arrows", h=8)], "learn from one task's recordings at a time"),
    (lambda t: [crafted(t / "old.arrows", plan_std=False)], "older than the plan_std column"),
    (lambda t: [crafted(t / "stale.arrows", flags=8)], "no planned ticks"),
    (lambda t: [crafted(t / "bare.arrows", metadata={"task": "pendulum"})], "not an mpcd recording (its metadata has no state_dimension)"),
    (lambda t: [crafted(t / "ragged.arrows", change={"state": pa.array([[1.0], [1.0, 2.0, 3.0]] * 4, pa.list_(pa.float32()))})],
     "column state is list<item: float>, expected 2 float32 values"),
    (lambda t: [crafted(t / "wide.arrows", change={"state": pa.array([[1.0, 2.0, 3.0]] * 8, pa.list_(pa.float32(), 3))})],
     "column state is fixed_size_list<item: float>[3], expected 2 float32 values"),
    (lambda t: [crafted(t / "text.arrows", change={"plan_cost": pa.array(["1"] * 8)})], "column plan_cost is string"),
    (lambda t: [crafted(t / "nulls.arrows", change={"flags": pa.array([0, None] * 4, pa.uint32())})], "column flags has null values"),
    (lambda t: [crafted(t / "half.arrows", extra={"horizon": "2.5"})], "metadata horizon is '2.5', not a whole number"),
    (lambda t: [crafted(t / "zero.arrows", extra={"state_dimension": "0"})], "metadata state_dimension is '0'"),
    (lambda t: [crafted(t / "huge.arrows", extra={"horizon": "99999999999"})], "metadata horizon is '99999999999'"),
    (lambda t: [crafted(t / "one.arrows", n=1)], "a pendulum recording with 1 state values"),
    (lambda t: [crafted(t / "cfg.arrows", extra={"configuration": "planner = 3\n[planner"})], "the recorded configuration does not parse"),
    (lambda t: [crafted(t / "far.arrows", change={"plan_mean": pa.array([np.full(4, 1e30, np.float32)] * 8, pa.list_(pa.float32(), 4))})],
     "no ticks left to learn from"),
    (lambda t: [crafted(t / "few.arrows", rows=3)], "3 ticks to learn from, fewer than --batch 4"),
    (lambda t: [crafted(t / "bounds.arrows", extra={"action_low": "x", "action_high": "1"})],
     "metadata action_low and action_high must be 1 finite numbers each, low below high"),
    (lambda t: [crafted(t / "upside.arrows", extra={"action_low": "1", "action_high": "-1"})], "low below high"),
    (lambda t: [crafted(t / "robot.arrows", task="robot")], "the recordings carry no action bounds"),
    (lambda t: [crafted(t / "a.arrows", extra={"action_low": "-1", "action_high": "1"}),
                crafted(t / "b.arrows", extra={"action_low": "-2", "action_high": "2"})], "unlike the other files'"),
    (lambda t: [crafted(t / "features.arrows", task="robot", extra={"feature_names": "a,b,c"})], "3 network inputs for 2 state values"),
])
def test_recordings_that_cannot_be_learned_from_are_refused_by_name(tmp_path, files, message):
    (tmp_path / "garbage.arrows").write_bytes(b"\xff\xff\xff\xff" + b"not arrow" * 10)
    paths = files(tmp_path)
    result = learn(*paths, "--out", tmp_path / "out.safetensors", "--batch", 4, check=False)
    assert result.returncode == 78, result.stdout + result.stderr
    assert not (tmp_path / "out.safetensors").exists()
    if message:
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def broken_network(path, change):
    """The shipped policy's file with `change` applied to its header (a dict), or to its bytes."""
    data = (REPO / "deploy" / "networks" / "pendulum_policy.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    body = data[8 + length:]
    if callable(change):
        header, body = change(header, body)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)
    return path


def nan_weights(header, body):
    start = header["mean.bias"]["data_offsets"][0]
    return header, body[:start] + struct.pack("<f", float("nan")) + body[start + 4:]


@pytest.mark.parametrize("network, message", [
    (lambda t: REPO / "deploy" / "networks" / "pendulum_value.safetensors", "a value network for pendulum, not a policy"),
    (lambda t: REPO / "deploy" / "networks" / "cartpole_policy.safetensors", "for cartpole, not a policy for pendulum"),
    (lambda t: t / "missing.safetensors", "missing.safetensors: No such file"),
    (lambda t: broken_network(t / "cut.safetensors", lambda h, b: (h, b[:100])), "not those of shape"),
    (lambda t: broken_network(t / "text.safetensors", lambda h, b: (h | {"__metadata__": "policy"}, b)), "no __metadata__ of strings"),
    (lambda t: broken_network(t / "sigmoid.safetensors", lambda h, b: (h | {"__metadata__": h["__metadata__"] | {"activation": "sigmoid"}}, b)),
     "activation is 'sigmoid'"),
    (lambda t: broken_network(t / "version.safetensors", lambda h, b: (h | {"__metadata__": h["__metadata__"] | {"version": "abc"}}, b)),
     "must be whole numbers"),
    (lambda t: broken_network(t / "nan.safetensors", nan_weights), "tensor mean.bias has values that are not finite"),
    (lambda t: broken_network(t / "entry.safetensors", lambda h, b: (h | {"mean.bias": "x"}, b)), "tensor mean.bias is not F32"),
])
def test_a_network_that_cannot_be_continued_from_is_refused_by_name(recorded, tmp_path, network, message):
    result = learn(recorded, "--init", network(tmp_path), "--out", tmp_path / "x.safetensors", check=False)
    assert result.returncode == 78 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--batch", "-4"), ("--lr", "nan"), ("--hidden", "64,x"), ("--hidden", "0"),
                                         ("--hidden", "4096,4096,4096"), ("--seed", "-1"), ("--seed", str(2 ** 64)),
                                         ("--out", "/nonexistent/folder/x.safetensors"), ("--summary", "/")])
def test_bad_flags_are_refused_before_anything_is_read(tmp_path, flag, value):
    # no recordings at the path given: the flag is refused first
    args = (flag, value) if flag == "--out" else (flag, value, "--out", tmp_path / "x.safetensors")
    result = learn(tmp_path / "nothing-here", *args, check=False)
    assert result.returncode == 2 and flag in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_batch_that_does_not_split_between_the_processes_is_refused(recorded, tmp_path):
    result = learn(recorded, "--batch", 63, "--out", tmp_path / "x.safetensors", processes=2, check=False)
    # the processes exit 2; torchrun reports a failed process with its own status, 1
    assert result.returncode == 1 and "--batch 63 does not split evenly between 2 processes" in result.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_a_mujoco_robots_recordings_train_a_policy_the_daemon_takes(tmp_path, start_daemon):
    # a model of the user's own, not a built-in task: the bounds come from the recording's metadata
    shutil.copy(REPO / "Tests" / "ModelsTests" / "Fixtures" / "mujoco" / "pendulum_on_a_cart.xml", tmp_path / "robot.xml")
    folder = tmp_path / "recordings"
    config = tmp_path / "robot.toml"
    config.write_text('[task]\nname = "mujoco"\nmodel = "robot.xml"\n[[task.cost]]\nquantity = "qpos"\nname = "hinge"\n'
                      f'[planner]\nsamples = 32\nhorizon = 10\n[recording]\ndirectory = "{folder}"\nenabled = true\n')
    daemon = start_daemon("--config", str(config))
    states = np.random.default_rng(1).normal(0, 0.1, size=(64, 4))
    with Controller(daemon.endpoint) as client:
        for state in states:
            client.act(state)
    assert wait_for(lambda: daemon.status()["recording"]["written"] == 64)
    files = recordings(folder)
    meta = {k.decode(): v.decode() for k, v in pa.ipc.open_stream(pa.OSFile(str(files[0]))).schema.metadata.items()}
    low, high = float(meta["action_low"]), float(meta["action_high"])
    assert meta["task"] == "mujoco" and low < high and meta["feature_names"] == meta["state_names"]
    learn(folder, "--epochs", 2, "--batch", 16, "--out", tmp_path / "robot_policy.safetensors")
    policy, network = load(tmp_path / "robot_policy.safetensors")
    assert network["task"] == "mujoco" and network["inputs"] == "4" and network["actions"] == "1"
    daemon.mpcctl("policy", "load", str(tmp_path / "robot_policy.safetensors"))
    assert daemon.status()["prior"]["file"] == str(tmp_path / "robot_policy.safetensors")
    with Controller(daemon.endpoint) as client:
        action = client.act(states[0])
    assert low <= action[0] <= high


@pytest.mark.parametrize("module, args, message", [
    ("learn_results", ["--episodes", "5"], "--episodes must be at least 10"),
    ("learn_results", ["--mpcd", "/nonexistent/mpcd"], "--mpcd /nonexistent/mpcd: not an mpcd binary"),
    ("fleet_rounds", ["--rounds", "0"], "--rounds must be from 1 to 20"),
    ("fleet_rounds", ["--rounds", "21"], "--rounds must be from 1 to 20"),
    ("fleet_rounds", ["--episodes", "-3"], "--episodes at least 10"),
    ("fleet_rounds", ["--start", "/nonexistent/policy.safetensors"], "no such file"),
    ("fleet_rounds", ["--out", "/nonexistent/folder/policy.safetensors"], "no folder /nonexistent/folder"),
    ("fleet_rounds", ["--mpcd", str(REPO)], "not an mpcd binary"),
])
def test_the_results_scripts_refuse_bad_flags_before_any_work(module, args, message):
    result = subprocess.run([PYTHON, "-m", f"mpcd_client.{module}", *args], capture_output=True, text=True, timeout=60, cwd=CLIENT)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
