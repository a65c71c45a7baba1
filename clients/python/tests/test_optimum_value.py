"""The optimum's value as an mpcd network: flags refused before any work, a fit that fits, and a
file mpcd takes."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import MPCD, REPO
from mpcd_client import optimum_value
from mpcd_client.torch_networks import MpcdMLP, features, load, save


def run(*args):
    return subprocess.run([sys.executable, "-m", "mpcd_client.optimum_value", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("flags, named", [
    (["--epochs", "0"], "--epochs"), (["--hidden", "64,x"], "--hidden"), (["--hidden", "0"], "--hidden"),
    (["--hidden", "5000,5000"], "parameters"), (["--seed", "-1"], "--seed"), (["--activation", "sigmoid"], "--activation"),
    (["--out", "/no/such/folder/v.safetensors"], "no folder"), (["--out", "/tmp"], "a folder"),
    (["--out", "nosuchfolder/"], "a folder"),
])
def test_bad_flags_are_refused_by_name_before_any_work(flags, named, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        optimum_value.main(["--out", str(tmp_path / "v.safetensors")] + flags)
    assert exit.value.code == 2 and named in capsys.readouterr().err
    assert not (tmp_path / "v.safetensors").exists()


def test_a_bad_flag_from_the_command_line_is_a_message_not_a_traceback(tmp_path):
    result = run("--out", str(tmp_path / "v.safetensors"), "--epochs", "0")
    assert result.returncode == 2 and "--epochs" in result.stderr and "Traceback" not in result.stderr


def test_a_fit_follows_its_table_and_mpcd_takes_the_file(tmp_path):
    rng = np.random.default_rng(0)
    states = np.stack([rng.uniform(-np.pi, np.pi, 2000), rng.uniform(-8, 8, 2000)], axis=1)
    # a smooth cost-to-go of the pendulum's shape: least upright and still, most hanging and fast
    values = 40 * (1 - np.cos(states[:, 0])) + 0.5 * states[:, 1] ** 2
    module, scale, rms, largest = optimum_value.fit(values, states, hidden=(32,), epochs=300, batch=256, out=lambda _: None)
    assert rms < 0.03 * np.ptp(values), rms
    path = tmp_path / "value.safetensors"
    optimum_value.write(module, scale, path)
    loaded, metadata = load(path)
    assert metadata["kind"] == "value" and metadata["discount"] == "1.0" and metadata["min_value"] == "0"
    assert [p.name for p in tmp_path.iterdir()] == ["value.safetensors"]  # no temporary file left
    with torch.no_grad():
        written = float(metadata["value_scale"]) * loaded(torch.from_numpy(features("pendulum", states)))[0][:, 0].numpy()
    assert np.allclose(written, values, atol=5 * rms)
    config = tmp_path / "mpcd.toml"
    config.write_text('[task]\nname = "pendulum"\n\n[planner]\nhorizon = 16\n\n[value]\nfile = "value.safetensors"\n')
    check = subprocess.run([str(MPCD), "--config", str(config), "--check"], capture_output=True, text=True, timeout=20)
    assert check.returncode == 0, check.stdout + check.stderr


def test_compare_measures_a_value_against_a_table(tmp_path):
    rng = np.random.default_rng(1)
    states = np.stack([rng.uniform(-np.pi, np.pi, 1000), rng.uniform(-8, 8, 1000)], axis=1)
    values = 40 * (1 - np.cos(states[:, 0])) + 0.5 * states[:, 1] ** 2
    module, scale, rms, _ = optimum_value.fit(values, states, hidden=(32,), epochs=200, batch=256, out=lambda _: None)
    path = tmp_path / "v.safetensors"
    optimum_value.write(module, scale, path)
    network = optimum_value.read_value(path)
    same = optimum_value.compare(network, values, states)
    assert abs(same["all"]["rms"] - rms) < 1e-3 * np.ptp(values) and same["all"]["correlation"] > 0.99
    # a table dearer by 10 everywhere: the network's mean error reads -10, its correlation unchanged
    dearer = optimum_value.compare(network, values + 10, states)
    assert abs(dearer["all"]["mean"] - (same["all"]["mean"] - 10)) < 1e-3
    assert abs(dearer["all"]["correlation"] - same["all"]["correlation"]) < 1e-9
    # the floor (0, as written) applies as in mpcd: a network fitted to a table that goes below zero
    # has its negative predictions raised to 0, which shows as that much mean error
    low = values - 50
    module, scale, low_rms, _ = optimum_value.fit(low, states, hidden=(32,), epochs=200, batch=256, out=lambda _: None)
    optimum_value.write(module, scale, path)
    floored = optimum_value.compare(optimum_value.read_value(path), low, states)
    raised = np.mean(np.maximum(0, -low))
    assert raised > 5 * low_rms and abs(floored["all"]["mean"] - raised) < 2 * low_rms


def test_compare_refuses_what_is_not_a_pendulum_value_by_name(tmp_path, capsys):
    policy = REPO / "deploy" / "networks" / "pendulum_policy.safetensors"
    mountain_car = REPO / "deploy" / "networks" / "mountain_car_value.safetensors"
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 7)

    def value(name, inputs=3, outputs=1, **metadata):
        path = tmp_path / name
        extra = {"value_scale": "100.0", "discount": "1.0", "min_value": "0"} | metadata
        save(MpcdMLP(inputs, [8], outputs, "relu"), path, "value", "pendulum", extra=extra)
        return path

    cases = [(policy, "a policy network for pendulum"), (mountain_car, "for mountain_car"),
             (garbage, "garbage.safetensors"), (tmp_path / "missing.safetensors", "missing.safetensors"),
             (value("two_inputs.safetensors", inputs=2), "takes 2 inputs"),
             (value("two_outputs.safetensors", outputs=2), "gives 2 outputs"),
             (value("negative_scale.safetensors", value_scale="-5"), "value_scale -5 must be a positive number"),
             (value("zero_scale.safetensors", value_scale="0"), "value_scale 0"),
             (value("nan_floor.safetensors", min_value="nan"), "min_value nan"),
             (value("wordy_floor.safetensors", min_value="low"), "not a number"),
             (value("big_discount.safetensors", discount="7"), "discount 7 must be in (0, 1]")]
    assert optimum_value.read_value(value("fine.safetensors"))[1:] == (100.0, 0.0, 1.0)  # the same file, well formed, passes
    for path, named in cases:
        assert optimum_value.main(["--compare", str(path)]) == 78
        assert named in capsys.readouterr().err


@pytest.mark.parametrize("flags, named", [
    ([], "one of the arguments --out --compare is required"),
    (["--out", "/tmp/x.safetensors", "--compare", "/tmp/y.safetensors"], "not allowed with"),
    (["--compare", "/tmp/y.safetensors", "--hidden", "8"], "--hidden: for fitting with --out, not for --compare"),
    (["--compare", "/tmp/y.safetensors", "--epochs", "3", "--seed", "1"], "--epochs, --seed: for fitting"),
])
def test_out_and_compare_are_one_or_the_other(flags, named, capsys):
    with pytest.raises(SystemExit) as exit:
        optimum_value.main(flags)
    assert exit.value.code == 2 and named in capsys.readouterr().err
