"""Which libmujoco mpcd loads (docs/models.md, "Which MuJoCo"): MuJoCo's AVX build of 2.2.2, fetched
into .deps by scripts/mujoco_library.sh (pinned by sha256) and copied beside the binaries, or the
system's (Debian's); and what refuses the others."""
import hashlib
import os
import re
import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import MPCD, REPO

SCRIPT = REPO / "scripts" / "mujoco_library.sh"
CHEETAH = REPO / "deploy" / "config" / "mujoco" / "half_cheetah.toml"
CACHE = REPO / ".deps" / "mujoco-2.2.2" / "libmujoco.so.2.2.2"
PINNED = re.search(r"^LIBRARY_SHA256=([0-9a-f]{64})$", SCRIPT.read_text(), re.M).group(1)
HEADERS_222 = re.search(r"^#define mjVERSION_HEADER 222$", Path("/usr/include/mujoco/mujoco.h").read_text(), re.M) is not None
AVX = os.uname().machine == "x86_64" and "avx" in Path("/proc/cpuinfo").read_text().split()


def run_script(*arguments, cache=None, cwd=None):
    env = dict(os.environ)
    if cache is not None:
        env["MPCD_MUJOCO_DIR"] = str(cache)
    return subprocess.run([str(SCRIPT), *arguments], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def check(env=None, binary=MPCD):
    return subprocess.run([str(binary), "--check", "--config", str(CHEETAH)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_a_native_build_here_loads_the_pinned_avx_build_from_beside_it():
    """Where the AVX build can run (x86-64 with AVX, Debian's 2.2.2 headers), `make deps` must have
    fetched it and `make build` put it beside the binaries; --check names that copy. A fetch that
    quietly failed, a copy missing, or a search path that misses it fails here."""
    result = check()
    assert result.returncode == 0, result.stderr
    loaded = re.search(r"^  MuJoCo 2\.2\.2: (/\S+)$", result.stdout, re.M)
    assert loaded, result.stdout
    library = Path(loaded.group(1))
    assert library.name == "libmujoco.so.2.2.2" and library.is_file(), library
    beside = MPCD.resolve().parent / "libmujoco.so.2.2.2"
    if not (AVX and HEADERS_222):
        assert not beside.exists() and library != beside.resolve(), library
        return
    assert CACHE.is_file() and digest(CACHE) == PINNED, "make deps did not fetch the AVX build: run scripts/mujoco_library.sh"
    assert library == beside.resolve() and digest(library) == PINNED, library


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


needs_avx = pytest.mark.skipif(not (AVX and HEADERS_222), reason="the script fetches only on x86-64 with AVX and 2.2.2's headers")


@needs_avx
def test_the_fetch_refuses_a_wheel_that_is_not_the_pinned_one_and_removes_what_is_not(tmp_path):
    """A tampered or wrong wheel installs nothing; whatever is at the library's name that is not the
    pinned library (garbage, a folder) is removed, and the build goes on (exit 0, with the reason)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    wheel = tmp_path / "mujoco-2.2.2-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mujoco/libmujoco.so.2.2.2", b"\x7fELF not MuJoCo")
    for planted in ("file", "folder"):
        target = cache / "libmujoco.so.2.2.2"
        if planted == "file":
            target.write_bytes(b"\x7fELF not MuJoCo either")
        else:
            (target / "inside").mkdir(parents=True)
        result = run_script("--wheel", str(wheel), cache=cache)
        assert result.returncode == 0, result.stderr
        assert "is not the pinned mujoco 2.2.2 wheel" in result.stderr and "the system's libmujoco" in result.stderr, result.stderr
        assert list(cache.iterdir()) == [], list(cache.iterdir())
    # a relative --wheel is the caller's, not the repository's
    missing = run_script("--wheel", "nowhere.whl", cache=cache, cwd=tmp_path)
    assert missing.returncode == 0 and f"no wheel at {tmp_path}/nowhere.whl" in missing.stderr, missing.stderr
    # a cache that is a file, not a folder
    result = run_script("--wheel", str(wheel), cache=tmp_path / "cache" / ".." / wheel.name)
    assert result.returncode == 0 and "MuJoCo: " in result.stderr, result.stderr
    assert run_script("--bogus").returncode == 2
    assert run_script("--wheel").returncode == 2


@needs_avx
def test_the_copy_beside_the_binaries_is_the_pinned_file_or_nothing(tmp_path):
    """--into (make build) puts a checked copy at the name, replacing a link or garbage there, and
    removes a stale copy when the cache has none; four at once all succeed."""
    if not CACHE.is_file():
        pytest.fail("make deps did not fetch the AVX build into .deps")
    into = tmp_path / "bin"
    into.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"someone else's file")
    (into / "libmujoco.so.2.2.2").symlink_to(elsewhere)
    result = run_script("--into", str(into))
    assert result.returncode == 0 and "beside the binaries" in result.stdout, result.stderr
    placed = into / "libmujoco.so.2.2.2"
    assert not placed.is_symlink() and digest(placed) == PINNED
    assert elsewhere.read_bytes() == b"someone else's file"

    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: run_script("--into", str(tmp_path / "together")), range(4)))
    assert all(r.returncode == 0 and r.stderr == "" for r in runs), [r.stderr for r in runs]
    assert [p.name for p in (tmp_path / "together").iterdir()] == ["libmujoco.so.2.2.2"]
    assert digest(tmp_path / "together" / "libmujoco.so.2.2.2") == PINNED

    placed.write_bytes(b"truncated")
    assert run_script("--into", str(into)).returncode == 0 and digest(placed) == PINNED
    empty = tmp_path / "empty-cache"
    stale = run_script("--into", str(into), cache=empty)
    assert stale.returncode == 0 and "no AVX build fetched" in stale.stderr, stale.stderr
    assert not placed.exists()


@needs_avx
def test_the_fetch_keeps_the_pinned_library_without_downloading_again(tmp_path):
    if not CACHE.is_file():
        pytest.fail("make deps did not fetch the AVX build into .deps")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "libmujoco.so.2.2.2").write_bytes(CACHE.read_bytes())
    # a wheel that does not exist: the library in place is the pinned one, so none is read
    result = run_script("--wheel", str(tmp_path / "nowhere.whl"), cache=cache)
    assert result.returncode == 0 and "AVX build of 2.2.2 in" in result.stdout, (result.stdout, result.stderr)
    # a link to the pinned library is not taken for it: its target may change after the check
    (cache / "libmujoco.so.2.2.2").unlink()
    (cache / "libmujoco.so.2.2.2").symlink_to(CACHE)
    linked = run_script("--wheel", str(tmp_path / "nowhere.whl"), cache=cache)
    assert linked.returncode == 0 and "no wheel at" in linked.stderr, linked.stderr
    assert not (cache / "libmujoco.so.2.2.2").is_symlink() and CACHE.is_file()
