"""Which libmujoco mpcd loads (docs/models.md, "Which MuJoCo"): MuJoCo's AVX build of 2.2.2, put in
.deps by scripts/mujoco_library.sh (pinned by sha256), or Debian's; and what refuses the others."""
import hashlib
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import MPCD, REPO

SCRIPT = REPO / "scripts" / "mujoco_library.sh"
CHEETAH = REPO / "deploy" / "config" / "mujoco" / "half_cheetah.toml"
OWN = REPO / ".deps" / "mujoco-2.2.2" / "libmujoco.so.2.2.2"
PINNED = re.search(r"^LIBRARY_SHA256=([0-9a-f]{64})$", SCRIPT.read_text(), re.M).group(1)


def fetch(destination, *arguments):
    return subprocess.run([str(SCRIPT), *arguments], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPCD_MUJOCO_DIR": str(destination)})


def check(env=None):
    return subprocess.run([str(MPCD), "--check", "--config", str(CHEETAH)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def runpath():
    dynamic = subprocess.run(["readelf", "-d", str(MPCD)], capture_output=True, text=True, check=True).stdout
    found = re.search(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.*)\]", dynamic)
    return found.group(1).split(":") if found else []


def test_check_names_the_library_the_rollouts_step():
    result = check()
    assert result.returncode == 0, result.stderr
    loaded = re.search(r"^  MuJoCo 2\.2\.2: (/\S+)$", result.stdout, re.M)
    assert loaded, result.stdout
    library = Path(loaded.group(1))
    assert library.name == "libmujoco.so.2.2.2" and library.is_file(), library
    if OWN.is_file() and str(OWN.parent) in runpath():
        # a native build where `make deps` put the AVX build: that one, and it is the pinned file
        assert library == OWN, library
        assert hashlib.sha256(OWN.read_bytes()).hexdigest() == PINNED
    else:
        # a portable build, or no AVX build to be had here: Debian's
        assert OWN.parent not in library.parents, library


def test_a_library_of_another_version_is_refused_by_name(tmp_path):
    """Another version's library (here the `mujoco` package's 4.0, named as 2.2.2 is) would read
    mjModel and mjData with another layout: refused at load, naming the file and both versions."""
    mujoco = pytest.importorskip("mujoco")
    other = next(Path(mujoco.__file__).parent.glob("libmujoco.so.*"), None)
    if other is None or other.name == "libmujoco.so.2.2.2":
        pytest.skip("no MuJoCo library of another version in the mujoco package")
    (tmp_path / "libmujoco.so.2.2.2").symlink_to(other)
    result = check({"LD_LIBRARY_PATH": str(tmp_path)})
    assert result.returncode == 78, (result.returncode, result.stdout, result.stderr)
    assert str(other.resolve()) in result.stderr and f"is {mujoco.__version__}" in result.stderr, result.stderr
    assert "not the 2.2.2 whose headers mpcd was compiled against" in result.stderr, result.stderr


def test_the_fetch_refuses_a_wheel_that_is_not_the_pinned_one_and_removes_what_is_not(tmp_path):
    """A tampered or wrong wheel installs nothing; a file at the library's name that is not the
    pinned library (a truncated copy, a planted one) is removed, and the build goes on with
    Debian's (exit 0, with the reason)."""
    if "avx" not in Path("/proc/cpuinfo").read_text().split() or os.uname().machine != "x86_64":
        pytest.skip("the fetch only runs on an x86-64 CPU with AVX")
    destination = tmp_path / "mujoco"
    destination.mkdir()
    planted = destination / "libmujoco.so.2.2.2"
    planted.write_bytes(b"\x7fELF not MuJoCo")
    wheel = tmp_path / "mujoco-2.2.2-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mujoco/libmujoco.so.2.2.2", b"\x7fELF not MuJoCo either")
    result = fetch(destination, "--wheel", str(wheel))
    assert result.returncode == 0, result.stderr
    assert "is not the pinned mujoco 2.2.2 wheel" in result.stderr and "Debian's libmujoco 2.2.2" in result.stderr, result.stderr
    assert list(destination.iterdir()) == [], list(destination.iterdir())

    missing = fetch(destination, "--wheel", str(tmp_path / "nowhere.whl"))
    assert missing.returncode == 0 and "no wheel at" in missing.stderr, missing.stderr
    assert not (destination / "libmujoco.so.2.2.2").exists()
    assert fetch(destination, "--bogus").returncode == 2


def test_the_fetch_keeps_the_pinned_library_without_downloading_again(tmp_path):
    if not OWN.is_file():
        pytest.skip("no AVX build in .deps here")
    destination = tmp_path / "mujoco"
    destination.mkdir()
    (destination / "libmujoco.so.2.2.2").write_bytes(OWN.read_bytes())
    # a wheel that does not exist: the library in place is the pinned one, so none is read
    result = fetch(destination, "--wheel", str(tmp_path / "nowhere.whl"))
    assert result.returncode == 0 and "AVX build of 2.2.2 in" in result.stdout, (result.stdout, result.stderr)
    assert hashlib.sha256((destination / "libmujoco.so.2.2.2").read_bytes()).hexdigest() == PINNED
