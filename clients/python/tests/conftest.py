"""Starts the real mpcd binary for end-to-end tests and talks to it over real sockets."""
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
MPCD = Path(os.environ.get("MPCD_BIN", REPO / ".build" / "release" / "mpcd"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, args, tmp_path):
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.log = open(tmp_path / f"mpcd-{time.monotonic_ns()}.log", "w+")
        self.process = subprocess.Popen([str(MPCD), "--endpoint", self.endpoint, *args], stdout=subprocess.PIPE,
                                        stderr=self.log, text=True)
        line = self.process.stdout.readline()
        if "listening" not in line:
            self.stop()
            self.log.seek(0)
            raise RuntimeError(f"mpcd did not start: {line!r} {self.log.read()}")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def logs(self):
        with open(self.log.name) as f:
            return f.read()


@pytest.fixture
def start_daemon(tmp_path):
    """start_daemon(*args) -> Daemon on a free loopback port; stopped after the test."""
    started = []

    def start(*args):
        assert MPCD.exists(), f"{MPCD} is missing: build with `swift build -c release`"
        daemon = Daemon(list(args), tmp_path)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
