"""`mpcctl top` in a real terminal (tmux): two live sessions with their rates, redrawn in place."""
import re
import shutil
import subprocess
import time

import pytest

from conftest import MPCCTL, Streamer

RATE_HZ = 40


def tmux(*args):
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=10, check=True).stdout


def rows(screen):
    """PEER -> RATE Hz from the table."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^(arm-\w+)\s+(\S+)\s", screen, flags=re.M)}


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (make deps installs it)")
def test_top_shows_two_live_sessions_with_their_rates_in_a_terminal(start_daemon, tmp_path):
    daemon = start_daemon("--mode", "realtime", "--rate-hz", str(RATE_HZ))
    control = daemon.status()["control"]
    streamers = [Streamer(daemon.endpoint, name) for name in (b"arm-left", b"arm-right")]
    for s in streamers:
        s.start()
    session = f"mpcd-top-{time.monotonic_ns()}"
    env = ["-e", f"RUNTIME_DIRECTORY={daemon.env['RUNTIME_DIRECTORY']}"]
    try:
        tmux("new-session", "-d", "-s", session, "-x", "150", "-y", "30", *env, f"{MPCCTL} top --socket {control} --interval 0.5")
        screens = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(0.7)
            screen = tmux("capture-pane", "-p", "-t", session)
            found = rows(screen)
            if len(found) == 2 and all(v != "-" for v in found.values()):
                screens.append(screen)
                if len(screens) == 3:
                    break
        assert len(screens) == 3, f"top never showed both sessions with rates:\n{screen}"
        for screen in screens:
            # redrawn in place: one header, one table, nothing scrolled above it
            assert screen.count("PEER") == 1 and screen.lstrip().startswith("mpcd "), screen
            for peer, rate in rows(screen).items():
                assert abs(float(rate) - RATE_HZ) < 0.2 * RATE_HZ, f"{peer} at {rate} Hz:\n{screen}"
        uptimes = [re.search(r"up (\d+m \d+s)", s).group(1) for s in screens]
        assert len(set(uptimes)) > 1, "the screen did not refresh"
        # Ctrl-C ends it cleanly
        tmux("send-keys", "-t", session, "C-c")
        time.sleep(0.5)
        assert session not in subprocess.run(["tmux", "ls"], capture_output=True, text=True).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        for s in streamers:
            s.stop()


def test_top_without_a_terminal_prints_plain_blocks_and_keeps_going_when_the_daemon_is_gone(start_daemon, tmp_path):
    daemon = start_daemon()
    control = daemon.status()["control"]
    result = subprocess.run([str(MPCCTL), "top", "--socket", control, "--count", "2", "--interval", "0.2"],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0 and "\x1b[" not in result.stdout and result.stdout.count("PEER") == 2, result.stdout
    assert "(no sessions)" in result.stdout
    daemon.stop()
    gone = subprocess.run([str(MPCCTL), "top", "--socket", control, "--count", "2", "--interval", "0.2"],
                          capture_output=True, text=True, timeout=20)
    assert gone.returncode == 0 and gone.stdout.count("mpcd is not answering") == 2, gone.stdout


@pytest.mark.parametrize("flags,message", [
    (["--interval", "0"], "--interval must be between 0.1 and 3600"),
    (["--interval", "nan"], "--interval must be between 0.1 and 3600"),
    (["--count", "0"], "--count must be at least 1"),
])
def test_top_refuses_bad_flags(flags, message):
    result = subprocess.run([str(MPCCTL), "top", *flags], capture_output=True, text=True, timeout=10)
    assert result.returncode != 0 and message in result.stderr, result.stderr
