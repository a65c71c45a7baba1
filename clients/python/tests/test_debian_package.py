"""The Debian package: built by scripts/build_deb.sh, installed, upgraded and purged with dpkg in a
throwaway root (maintainer scripts run without a chroot, with DPKG_ROOT set, as dpkg does for such
roots), its binaries run with no Swift toolchain, and lintian's findings are the justified ones."""
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, free_port
from mpcd_client import Controller

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None or os.geteuid() != 0,
                                reason="needs dpkg-deb and root (dpkg --root)")

STRAYS = ["deploy/config/stray-trace.json", "deploy/networks/stray.safetensors.checkpoint"]
EXAMPLES = ["deploy/config", "deploy/networks", "deploy/grafana", "deploy/prometheus"]


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Version 0.1.0-1 (the source's) and an upgrade, 0.1.0-2, built from the same binaries. The
    first is built with stray files in the example folders, as a session leaves them (a trace
    written with --out, a training checkpoint)."""
    out = tmp_path_factory.mktemp("dist")
    strays = [REPO / path for path in STRAYS]
    for stray in strays:
        stray.write_text("left here by hand\n")
    try:
        first = subprocess.run([str(REPO / "scripts" / "build_deb.sh"), "--out", str(out)], capture_output=True, text=True, timeout=3000)
    finally:
        for stray in strays:
            stray.unlink()
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run([str(REPO / "scripts" / "build_deb.sh"), "--out", str(out), "--version", "0.1.0-2"],
                            capture_output=True, text=True, timeout=3000)
    assert second.returncode == 0, second.stderr[-3000:]
    debs = sorted(out.glob("mpcd_*.deb"))
    assert len(debs) == 2, debs
    return debs


def dpkg(root, *args):
    result = subprocess.run(["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends", "--force-unsafe-io", *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def throwaway_root(tmp_path):
    root = tmp_path / "root"
    for folder in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"):
        (root / folder).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    return root


def everything(root):
    """Every file and link in the root but dpkg's own database."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if (p.is_file() or p.is_symlink()) and not p.relative_to(root).as_posix().startswith("var/lib/dpkg"))


def test_the_package_installs_runs_without_a_toolchain_upgrades_and_purges_to_nothing(packages, tmp_path):
    first, second = packages
    root = throwaway_root(tmp_path)
    dpkg(root, "-i", str(first))
    for path in ("usr/bin/mpcd", "usr/bin/mpcctl", "lib/systemd/system/mpcd.service", "etc/mpcd/mpcd.toml",
                 "usr/share/mpcd/networks/pendulum_policy.safetensors", "usr/share/mpcd/grafana/mpcd-dashboard.json",
                 "usr/share/doc/mpcd/copyright", "usr/share/doc/mpcd/operations.md.gz"):
        assert (root / path).exists(), path
    assert oct((root / "etc/mpcd/credentials").stat().st_mode & 0o777) == "0o700"
    # the examples are the files the checkout tracks, every one of them and nothing left beside them
    if (REPO / ".git").exists():
        tracked = subprocess.run(["git", "-c", f"safe.directory={REPO}", "-C", str(REPO), "ls-files", "--", *EXAMPLES],
                                 capture_output=True, text=True)
        assert tracked.returncode == 0, tracked.stderr
        shipped = sorted(p.relative_to(root / "usr/share/mpcd").as_posix() for p in (root / "usr/share/mpcd").rglob("*") if p.is_file())
        assert shipped == sorted(f.removeprefix("deploy/") for f in tracked.stdout.split()), shipped
        assert not any(stray.removeprefix("deploy/") in shipped for stray in STRAYS)
    # nothing that points outside the package (the checkout's link to Gymnasium's models)
    links = [p for p in (root / "usr").rglob("*") if p.is_symlink()]
    assert links == [], links
    unit = (root / "lib/systemd/system/mpcd.service").read_text()
    assert "ExecStart=/usr/bin/mpcd --config /etc/mpcd/mpcd.toml" in unit and "LoadCredential=mpcd:/etc/mpcd/credentials" in unit
    # enabled by the maintainer script, inside the throwaway root only
    wants = root / "etc/systemd/system/multi-user.target.wants/mpcd.service"
    assert wants.is_symlink() and os.readlink(wants) == "/lib/systemd/system/mpcd.service"
    assert "/etc/mpcd/mpcd.toml" in (root / "var/lib/dpkg/status").read_text()

    # the binaries need no Swift toolchain: no library of it loaded, and they run with nothing else
    mpcd, mpcctl = root / "usr/bin/mpcd", root / "usr/bin/mpcctl"
    for binary in (mpcd, mpcctl):
        libraries = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
        assert "swift" not in libraries.lower() and "not found" not in libraries, libraries
        dynamic = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True, check=True).stdout
        assert "RUNPATH" not in dynamic and "RPATH" not in dynamic, dynamic
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    version = subprocess.run([str(mpcd), "--version"], capture_output=True, text=True, env=clean, timeout=10)
    assert version.returncode == 0 and version.stdout.strip() == "0.1.0", version.stderr
    check = subprocess.run([str(mpcd), "--config", str(root / "etc/mpcd/mpcd.toml"), "--check", "--check-as", "self"],
                           capture_output=True, text=True, env=clean, timeout=30)
    assert check.returncode == 0 and "OK" in check.stdout, check.stderr
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    daemon = subprocess.Popen([str(mpcd), "--config", str(root / "etc/mpcd/mpcd.toml"), "--endpoint", endpoint,
                               "--control", f"ipc://{tmp_path}/run/control.sock"], env=clean, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert "listening" in daemon.stdout.readline()
        with Controller(endpoint) as c:
            assert np.all(np.isfinite(c.act(np.array([0.5, 0.0]))))
        status = subprocess.run([str(mpcctl), "status", "--socket", f"ipc://{tmp_path}/run/control.sock"], capture_output=True,
                                text=True, env=clean, timeout=10)
        assert status.returncode == 0 and "pendulum" in status.stdout, status.stderr
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)

    # an upgrade keeps the operator's edited configuration and the service's enablement
    config = root / "etc/mpcd/mpcd.toml"
    config.write_text(config.read_text() + "\n# edited on the box\n")
    dpkg(root, "--force-confold", "-i", str(second))
    assert "Version: 0.1.0-2" in dpkg(root, "-s", "mpcd")
    assert config.read_text().endswith("# edited on the box\n")
    assert wants.is_symlink()

    # what the service and its operators made: a secret, online-learning state
    (root / "etc/mpcd/credentials/server.key").write_text("secret\n")
    (root / "var/lib/private/mpcd").mkdir(parents=True)
    (root / "var/lib/private/mpcd/pendulum_policy_online.safetensors").write_text("weights")
    (root / "var/lib/mpcd").symlink_to("private/mpcd")
    dpkg(root, "--purge", "mpcd")
    left = everything(root)
    assert left == [], f"dpkg --purge left: {left}"
    assert not (root / "etc/mpcd").exists()


def test_the_package_declares_what_its_binaries_load(packages, tmp_path):
    """Every library the binaries link directly (NEEDED) comes from a package in Depends, or from
    one such a package depends on (libopenblas0 chooses its build through alternatives)."""
    first, _ = packages
    fields = subprocess.run(["dpkg-deb", "-f", str(first)], capture_output=True, text=True, check=True).stdout
    depends = {d.strip().split()[0] for d in re.search(r"^Depends: (.*)$", fields, flags=re.M).group(1).split(",")}
    assert {"libzmq5", "libopenblas0", "libmujoco2.2.2", "libc6"} <= depends, depends
    def dependencies_of(package):
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Depends}", package], capture_output=True, text=True).stdout
        return {alt.strip().split()[0] for d in out.split(",") for alt in d.split("|") if alt.strip()}
    contents = tmp_path / "contents"
    subprocess.run(["dpkg-deb", "-x", str(first), str(contents)], check=True)
    for binary in ("usr/bin/mpcd", "usr/bin/mpcctl"):
        dynamic = subprocess.run(["readelf", "-d", str(contents / binary)], capture_output=True, text=True, check=True).stdout
        libraries = subprocess.run(["ldd", str(contents / binary)], capture_output=True, text=True, check=True).stdout
        for needed in re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]", dynamic):
            # "libz.so.1 => /lib/.../libz.so.1 (0x...)", or the loader's own "/lib64/ld-linux-x86-64.so.2 (0x...)"
            found = re.search(rf"^\s*{re.escape(needed)} => (\S+)", libraries, flags=re.M) \
                or re.search(rf"^\s*(/\S*/{re.escape(needed)}) ", libraries, flags=re.M)
            path = found.group(1)
            real = os.path.realpath(path)
            owner = subprocess.run(["dpkg", "-S", real], capture_output=True, text=True)
            if owner.returncode != 0:  # usr-merge: dpkg knows /lib, not /usr/lib
                owner = subprocess.run(["dpkg", "-S", real.replace("/usr/lib/", "/lib/", 1)], capture_output=True, text=True)
            assert owner.returncode == 0, f"{needed} ({real}): no package owns it"
            package = owner.stdout.split(":")[0]
            assert package in depends or any(package in dependencies_of(d) for d in depends), \
                f"{needed} comes from {package}, which Depends does not bring: {sorted(depends)}"
    control = subprocess.run(["dpkg-deb", "-I", str(first), "conffiles"], capture_output=True, text=True, check=True).stdout
    assert control.split() == ["/etc/mpcd/mpcd.toml"]


@pytest.mark.skipif(shutil.which("lintian") is None, reason="lintian is not installed (apt-get install lintian)")
def test_lintian_finds_nothing_but_the_overrides_and_each_override_says_why(packages):
    first, _ = packages
    result = subprocess.run(["lintian", "--tag-display-limit", "0", str(first)], capture_output=True, text=True, timeout=600)
    findings = re.findall(r"^[EWIX]: mpcd.*$", result.stdout, flags=re.M)
    assert not findings, result.stdout
    lines = (REPO / "deploy" / "debian" / "lintian-overrides").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("mpcd:"):
            assert i > 0 and (lines[i - 1].startswith("#") or lines[i - 1].startswith("mpcd:")), f"override without a reason: {line}"
