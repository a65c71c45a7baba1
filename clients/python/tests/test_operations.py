"""Operations: mpcctl against the real daemon, systemd's notify protocol, reload, metrics, the unit
file and the install script."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import MPCCTL, MPCD, REPO
from mpcd_client import Controller, protocol


def test_mpcctl_status_agrees_with_what_two_clients_saw(start_daemon):
    daemon = start_daemon()
    with Controller(daemon.endpoint, identity=b"robot-a") as a, Controller(daemon.endpoint, identity=b"robot-b") as b:
        for _ in range(12):
            a.act(np.array([0.3, 0.0]))
        for _ in range(20):
            b.act(np.array([-0.2, 0.1]))
        for frames in ([b"junk"], protocol.observation(99, np.zeros(5))):
            b._socket.send_multipart(frames)
            assert isinstance(protocol.decode(b._socket.recv_multipart()), protocol.ErrorReply)
        status = json.loads(daemon.mpcctl("status", "--json").stdout)
        text = daemon.mpcctl("status").stdout
    assert status["sessions"]["count"] == 2
    served = {s["peer"]: s["ticks_served"] for s in status["sessions"]["list"]}
    assert served == {"robot-a": 12, "robot-b": 20}
    assert status["rejected_messages"] == 2
    assert status["rejected_by_code"]["malformed"] == 1 and status["rejected_by_code"]["wrong_dimension"] == 1
    assert status["tick_latency_us"]["since_start"]["count"] == 32
    assert status["task"] == "pendulum" and status["planner"]["samples"] == 512
    assert status["prior"]["network_version"] >= 1
    assert "robot-a" in text and "robot-b" in text and "rejected messages" in text
    assert "value      none" in text and "value" not in status
    # the embedded default adapts its iterations: each session shows the rule's target and last gain
    for entry in status["sessions"]["list"]:
        assert entry["iteration_target"] in (0, 1, 2) and np.isfinite(entry["relative_gain"])
        assert f'{entry["iterations"]}/{entry["iteration_target"]}' in text


def test_mpcctl_status_shows_the_value_and_what_it_expects_beyond_the_horizon(start_daemon):
    daemon = start_daemon("--config", str(REPO / "deploy" / "config" / "pendulum_value.toml"))
    with Controller(daemon.endpoint) as c:
        c.act(np.array([3.0, 0.0]))  # the state form: near hanging
        status = json.loads(daemon.mpcctl("status", "--json").stdout)
        text = daemon.mpcctl("status").stdout
    assert status["value"]["file"].endswith("pendulum_value.safetensors") and status["value"]["weight"] == 1
    assert status["value"]["value_term"] > 10
    assert status["sessions"]["list"][0]["value_term"] == pytest.approx(status["value"]["value_term"])
    assert "beyond the horizon" in text


def test_mpcctl_says_when_the_daemon_is_not_running(tmp_path):
    env = dict(os.environ, RUNTIME_DIRECTORY=str(tmp_path))
    result = subprocess.run([str(MPCCTL), "status"], capture_output=True, text=True, timeout=10, env=env)
    assert result.returncode == 1
    assert "not running" in result.stderr


def test_a_second_daemon_on_the_same_control_socket_refuses_to_start(start_daemon):
    first = start_daemon()
    result = subprocess.run([str(MPCD), "--endpoint", "tcp://127.0.0.1:0"], capture_output=True, text=True, timeout=10, env=first.env)
    assert result.returncode != 0
    assert "another mpcd is running" in result.stderr and "--control for the control socket" in result.stderr
    first.mpcctl("status")  # the first is untouched


def test_a_second_daemon_with_its_own_control_socket_starts_and_each_answers_on_its_own(start_daemon, tmp_path):
    first = start_daemon()
    control = f"ipc://{tmp_path}/second/control.sock"
    second = start_daemon("--control", control, env={"RUNTIME_DIRECTORY": first.env["RUNTIME_DIRECTORY"]})
    assert json.loads(second.mpcctl("status", "--json", "--socket", control).stdout)["pid"] == second.process.pid
    assert json.loads(first.mpcctl("status", "--json").stdout)["pid"] == first.process.pid
    # a reload keeps the command line's control socket
    second.mpcctl("reload", "--socket", control)
    assert json.loads(second.mpcctl("status", "--json", "--socket", control).stdout)["control"] == control


@pytest.mark.parametrize("control", ["tcp:/", "udp://127.0.0.1:1", "ipc://", "/run/mpcd/control.sock"])
def test_a_bad_control_flag_is_refused_with_the_flag_named(control):
    result = subprocess.run([str(MPCD), "--control", control, "--check"], capture_output=True, text=True, timeout=10)
    assert result.returncode != 0 and "--control" in result.stderr and control in result.stderr, result.stderr


def test_systemd_notify_ready_watchdog_status_and_stopping(tmp_path):
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(5)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="200000", RUNTIME_DIRECTORY=str(tmp_path / "run"))
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    endpoint = f"tcp://127.0.0.1:{port.getsockname()[1]}"
    port.close()
    process = subprocess.Popen([str(MPCD), "--endpoint", endpoint], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        first = listener.recv(4096).decode()
        assert "READY=1" in first and "STATUS=" in first
        # READY comes after every socket is bound: the daemon answers at once
        with Controller(endpoint, timeout=1.0) as c:
            assert c.info["task"] == "pendulum"
        # WATCHDOG=1 every half interval (100 ms here) while the loop is on time
        pings, start = 0, time.monotonic()
        while time.monotonic() - start < 1.0:
            if "WATCHDOG=1" in listener.recv(4096).decode():
                pings += 1
        assert 6 <= pings <= 14, f"{pings} watchdog pings in 1 s, expected about 10"
        stop = time.monotonic()
        process.send_signal(signal.SIGTERM)
        messages = []
        while not any("STOPPING=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        process.wait(timeout=5)
        assert time.monotonic() - stop < 1.0
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
        listener.close()


def test_reload_keeps_the_old_configuration_when_the_new_one_is_broken(start_daemon, tmp_path):
    config = tmp_path / "mpcd.toml"
    config.write_text('[task]\nname = "pendulum"\n[planner]\nsamples = 256\n')
    daemon = start_daemon("--config", str(config))
    with Controller(daemon.endpoint) as c:
        c.act(np.array([0.1, 0.0]))
        config.write_text('[task]\nname = "pendulum"\n[planner]\nsamples = 0\n')
        refused = daemon.mpcctl("reload", check=False)
        assert refused.returncode != 0
        assert "planner.samples" in refused.stderr and "still serving the previous configuration" in refused.stderr
        assert json.loads(daemon.mpcctl("status", "--json").stdout)["planner"]["samples"] == 256
        c.act(np.array([0.1, 0.0]))  # still serving
        config.write_text('[task]\nname = "pendulum"\n[planner]\nsamples = 128\niterations = 2\n')
        daemon.mpcctl("reload")
        status = json.loads(daemon.mpcctl("status", "--json").stdout)
        assert status["planner"]["samples"] == 128 and status["planner"]["iterations"] == 2
        c.act(np.array([0.1, 0.0]))
        assert c.last.diagnostics["iterations"] == 2
        # SIGHUP reloads too
        config.write_text('[task]\nname = "pendulum"\n[planner]\nsamples = 64\n')
        daemon.process.send_signal(signal.SIGHUP)
        for _ in range(50):
            if json.loads(daemon.mpcctl("status", "--json").stdout)["planner"]["samples"] == 64:
                break
            time.sleep(0.05)
        assert json.loads(daemon.mpcctl("status", "--json").stdout)["planner"]["samples"] == 64


def test_a_reload_that_changes_the_rate_or_the_mode_starts_a_new_tick_grid(start_daemon, tmp_path):
    """The next tick was computed once, at start: reloaded from 0.2 Hz to 100 Hz, the daemon
    answered nothing until the old 5 s tick; reloaded from lockstep to realtime, it counted every
    period since the start as an overrun (99 after 5 s), with a warning."""
    config = tmp_path / "mpcd.toml"
    text = '[task]\nname = "pendulum"\n[planner]\nsamples = 64\n[server]\nmode = "{mode}"\nrate_hz = {rate}\n[safety]\nstale_after_s = 30\n'
    config.write_text(text.format(mode="realtime", rate=0.2))
    daemon = start_daemon("--config", str(config))
    with Controller(daemon.endpoint, timeout=8.0) as c:
        c.act(np.array([3.0, 0.0]))
        config.write_text(text.format(mode="realtime", rate=100))
        daemon.mpcctl("reload")
        start = time.monotonic()
        c.act(np.array([3.0, 0.0]))
        assert time.monotonic() - start < 0.5
    config.write_text(text.format(mode="lockstep", rate=20))
    daemon.mpcctl("reload")
    with Controller(daemon.endpoint, timeout=3.0) as c:
        c.act(np.array([3.0, 0.0]))
        before = c.last.diagnostics["overruns"]  # counted since the start, the 100 Hz phase included
        time.sleep(2.0)
        config.write_text(text.format(mode="realtime", rate=20))
        daemon.mpcctl("reload")
        for _ in range(3):
            c.act(np.array([3.0, 0.0]))
        # the old grid counted the 2 s in lockstep as about 40 overruns at 20 Hz
        assert c.last.diagnostics["overruns"] - before < 10, (before, c.last.diagnostics)


def test_policy_load_swaps_the_prior(start_daemon):
    daemon = start_daemon()
    bad = daemon.mpcctl("policy", "load", str(REPO / "deploy" / "networks" / "cartpole_policy.safetensors"), check=False)
    assert bad.returncode != 0 and "made for task cartpole" in bad.stderr
    daemon.mpcctl("policy", "load", str(REPO / "deploy" / "networks" / "pendulum_plan.safetensors"))
    status = json.loads(daemon.mpcctl("status", "--json").stdout)
    assert status["prior"]["kind"] == "plan"


def test_metrics_parse_as_prometheus_text(start_daemon):
    daemon = start_daemon()
    with Controller(daemon.endpoint) as c:
        for _ in range(25):
            c.act(np.array([2.0, 0.0]))
        text = daemon.mpcctl("metrics").stdout
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["mpcd_replies"].type == "counter"
    assert families["mpcd_sessions"].samples[0].value == 1
    latency = families["mpcd_tick_latency_seconds"]
    assert latency.type == "histogram"
    buckets = [s for s in latency.samples if s.name.endswith("_bucket")]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf" and counts[-1] == 25
    assert next(s.value for s in latency.samples if s.name.endswith("_count")) == 25


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_unit_verifies_and_rates_2_or_lower(tmp_path):
    unit = tmp_path / "mpcd.service"
    # the unit as installed, pointing at this build's binary
    unit.write_text((REPO / "systemd" / "mpcd.service").read_text().replace("/usr/local/bin/mpcd", str(MPCD)))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True, text=True, timeout=60)
    level = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout).group(1))
    assert level <= 2.0, security.stdout[-2000:]


def test_the_unit_does_not_restart_a_daemon_whose_configuration_is_broken(tmp_path):
    unit = (REPO / "systemd" / "mpcd.service").read_text()
    assert re.search(r"^Restart=on-failure$", unit, flags=re.M)
    assert re.search(r"^RestartPreventExitStatus=78$", unit, flags=re.M)
    broken = tmp_path / "broken.toml"
    broken.write_text("[planner]\nsamples = -1\n")
    result = subprocess.run([str(MPCD), "--config", str(broken)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 78 and "planner.samples" in result.stderr, result.stderr


def test_install_then_uninstall_leaves_no_file_behind(tmp_path):
    root = tmp_path / "root"
    env = dict(os.environ, DESTDIR=str(root))
    install = subprocess.run([str(REPO / "deploy" / "install.sh"), "--no-build"], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert install.returncode == 0, install.stderr
    installed = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    for expected in ("usr/local/bin/mpcd", "usr/local/bin/mpcctl", "etc/systemd/system/mpcd.service", "etc/mpcd/mpcd.toml",
                     "usr/local/share/doc/mpcd/operations.md"):
        assert expected in installed
    assert (root / "etc/mpcd/mpcd.toml").read_text().strip().startswith("# mpcd's embedded default")
    # mpcd in a folder of root's with its MuJoCo build beside it where make deps fetched one, and
    # no search path of its own into the checkout (whoever can write there would run in the service)
    assert os.readlink(root / "usr/local/bin/mpcd") == "../lib/mpcd/mpcd"
    dynamic = subprocess.run(["readelf", "-d", str(root / "usr/local/lib/mpcd/mpcd")], capture_output=True, text=True, check=True).stdout
    assert str(REPO) not in dynamic, dynamic
    fetched = REPO / ".deps" / "mujoco-2.2.2" / "libmujoco.so.2.2.2"
    assert (root / "usr/local/lib/mpcd/libmujoco.so.2.2.2").is_file() == fetched.is_file()
    if fetched.is_file():
        cheetah = REPO / "deploy" / "config" / "mujoco" / "half_cheetah.toml"
        named = subprocess.run([str(root / "usr/local/bin/mpcd"), "--check", "--config", str(cheetah)], capture_output=True, text=True, timeout=60)
        assert f"MuJoCo 2.2.2: {root}/usr/local/lib/mpcd/libmujoco.so.2.2.2" in named.stdout, (named.stdout, named.stderr)
    # the folder the unit passes as credentials: there, and root's alone
    assert oct((root / "etc/mpcd/credentials").stat().st_mode & 0o777) == "0o700"
    assert "LoadCredential=mpcd:/etc/mpcd/credentials" in (root / "etc/systemd/system/mpcd.service").read_text()
    # a second install keeps an edited configuration
    (root / "etc/mpcd/mpcd.toml").write_text("# edited\n")
    again = subprocess.run([str(REPO / "deploy" / "install.sh"), "--no-build"], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert again.returncode == 0 and "keeping the existing" in again.stdout
    assert (root / "etc/mpcd/mpcd.toml").read_text() == "# edited\n"
    (root / "etc/mpcd/mpcd.toml").unlink()
    fresh = subprocess.run([str(REPO / "deploy" / "install.sh"), "--no-build"], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert fresh.returncode == 0
    uninstall = subprocess.run([str(REPO / "deploy" / "install.sh"), "--uninstall"], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert uninstall.returncode == 0, uninstall.stderr
    left = [p for p in root.rglob("*") if p.is_file()]
    assert left == [], f"left behind: {left}"
    assert not (root / "etc/mpcd").exists()


def test_under_the_journal_every_line_carries_its_priority_and_no_timestamp(tmp_path):
    """systemd gives a service JOURNAL_STREAM (the device and inode of its stderr); journald then
    reads a "<N>" syslog priority off each line, which `journalctl -p warning` selects by."""
    log = tmp_path / "journal.log"
    config = tmp_path / "mpcd.toml"
    config.write_text('[task]\nname = "pendulum"\n')
    with open(log, "w") as stderr:
        st = os.fstat(stderr.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}", RUNTIME_DIRECTORY=str(tmp_path / "run"))
        process = subprocess.Popen([str(MPCD), "--config", str(config), "--endpoint", "tcp://0.0.0.0:0"], stdout=subprocess.PIPE,
                                   stderr=stderr, text=True, env=env)
        try:
            assert "listening" in process.stdout.readline()
            config.write_text('[task]\nname = "pendulum"\n[planner]\nsamples = 0\n')  # a reload the daemon refuses
            result = subprocess.run([str(MPCCTL), "reload"], capture_output=True, text=True, timeout=20, env=env)
            assert result.returncode != 0
        finally:
            process.terminate()
            process.wait(timeout=10)
    lines = log.read_text().splitlines()
    priorities = [int(re.match(r"^<([0-7])>mpcd: ", line).group(1)) for line in lines]  # every line has one
    by_priority = {p: [l for l, q in zip(lines, priorities) if q == p] for p in set(priorities)}
    assert any("non-loopback" in l for l in by_priority.get(4, [])), lines  # a warning
    assert any("reload refused" in l and "planner.samples" in l for l in by_priority.get(3, [])), lines  # an error, with its reason
    assert any("serving" in l for l in by_priority.get(6, [])), lines
    # what `journalctl -p warning` shows: priorities 0-4, and only warnings and errors
    shown = [l for l, p in zip(lines, priorities) if p <= 4]
    assert shown and all(": warning: " in l or ": error: " in l or ": critical: " in l for l in shown), shown
    assert not any(re.search(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", l) for l in lines)  # the journal stamps lines itself


def test_outside_the_journal_lines_keep_their_timestamps(tmp_path):
    log = tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        env = dict(os.environ, JOURNAL_STREAM="1:2", RUNTIME_DIRECTORY=str(tmp_path / "run"))  # another stream's
        process = subprocess.Popen([str(MPCD), "--endpoint", "tcp://127.0.0.1:0"], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        try:
            assert "listening" in process.stdout.readline()
        finally:
            process.terminate()
            process.wait(timeout=10)
    lines = log.read_text().splitlines()
    assert lines and not any(l.startswith("<") for l in lines)
    assert all(re.search(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", l) for l in lines), lines
