"""The optimum's value as an mpcd network: flags refused before any work, a fit that fits, and a
file mpcd takes."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import MPCD
from mpcd_client import optimum_value
from mpcd_client.torch_networks import features, load


def run(*args):
    return subprocess.run([sys.executable, "-m", "mpcd_client.optimum_value", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("flags, named", [
    (["--epochs", "0"], "--epochs"), (["--hidden", "64,x"], "--hidden"), (["--hidden", "0"], "--hidden"),
    (["--hidden", "5000,5000"], "parameters"), (["--seed", "-1"], "--seed"), (["--activation", "sigmoid"], "--activation"),
    (["--out", "/no/such/folder/v.safetensors"], "no folder"), (["--out", "/tmp"], "a folder"),
])
def test_bad_flags_are_refused_by_name_before_any_work(flags, named, tmp_path):
    args = ["--out", str(tmp_path / "v.safetensors")] + flags
    result = run(*args)
    assert result.returncode == 2 and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "v.safetensors").exists()


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
    assert metadata["kind"] == "value" and metadata["discount"] == "1.0"
    with torch.no_grad():
        written = scale * loaded(torch.from_numpy(features("pendulum", states)))[0][:, 0].numpy()
    assert np.allclose(written, values, atol=5 * rms)
    config = tmp_path / "mpcd.toml"
    config.write_text('[task]\nname = "pendulum"\n\n[planner]\nhorizon = 16\n\n[value]\nfile = "value.safetensors"\n')
    check = subprocess.run([str(MPCD), "--config", str(config), "--check"], capture_output=True, text=True, timeout=20)
    assert check.returncode == 0, check.stdout + check.stderr
