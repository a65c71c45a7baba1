"""Starts the real mpcd binary for end-to-end tests and talks to it over real sockets."""
import contextlib
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
MPCD = Path(os.environ.get("MPCD_BIN", REPO / ".build" / "release" / "mpcd"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MPCCTL = MPCD.parent / "mpcctl"


@contextlib.contextmanager
def fake_router(endpoint, answer):
    """Something on `endpoint` that is not mpcd: a ROUTER that answers each request (its frames
    after the routing id, a REQ client's empty delimiter included) with `answer(frames)` (None:
    no answer), on a thread, until the block ends."""
    import zmq
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            if router.poll(50):
                identity, *frames = router.recv_multipart()
                reply = answer(frames)
                if reply is not None:
                    router.send_multipart([identity, *reply])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        router.close()


class Daemon:
    """The real mpcd on a free loopback port, with its own runtime directory (control socket)."""

    def __init__(self, args, tmp_path, env=None, preexec=None, endpoint=None, stderr=None):
        self.endpoint = endpoint or f"tcp://127.0.0.1:{free_port()}"
        stamp = time.monotonic_ns()
        self.runtime = tmp_path / f"runtime-{stamp}"
        self.env = {**os.environ, "RUNTIME_DIRECTORY": str(self.runtime), **(env or {})}
        self.log = open(tmp_path / f"mpcd-{stamp}.log", "w+")
        self.process = subprocess.Popen([str(MPCD), "--endpoint", self.endpoint, *args], stdout=subprocess.PIPE,
                                        stderr=stderr if stderr is not None else self.log, text=True, env=self.env,
                                        preexec_fn=preexec)
        line = self.process.stdout.readline()
        if "listening" not in line:
            self.process.wait(timeout=10)
            self.log.seek(0)
            reason = self.log.read()
            self.stop()
            raise RuntimeError(f"mpcd did not start: {line!r} {reason}")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def status(self):
        """`mpcctl status --json` as a dict."""
        return __import__("json").loads(self.mpcctl("status", "--json").stdout)

    def logs(self):
        with open(self.log.name) as f:
            return f.read()

    def mpcctl(self, *args, check=True):
        """Runs mpcctl against this daemon; returns the completed process."""
        result = subprocess.run([str(MPCCTL), *args], capture_output=True, text=True, timeout=20, env=self.env)
        if check:
            assert result.returncode == 0, f"mpcctl {' '.join(args)}: {result.stderr}"
        return result


@pytest.fixture
def start_daemon(tmp_path):
    """start_daemon(*args) -> Daemon on a free loopback port; stopped after the test."""
    started = []

    def start(*args, env=None, preexec=None, endpoint=None, stderr=None):
        assert MPCD.exists(), f"{MPCD} is missing: build with `swift build -c release`"
        daemon = Daemon(list(args), tmp_path, env, preexec=preexec, endpoint=endpoint, stderr=stderr)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


class Streamer(threading.Thread):
    """A client streaming observations (one per reply) to a realtime daemon until `stop()`."""

    def __init__(self, endpoint, identity):
        super().__init__(daemon=True)
        self.endpoint, self.identity, self.stop_flag, self.replies = endpoint, identity, threading.Event(), 0

    def run(self):
        from mpcd_client import Controller, MpcdTimeout
        with Controller(self.endpoint, identity=self.identity) as c:
            while not self.stop_flag.is_set():
                c.send_observation(np.array([0.2, 0.0]))
                try:
                    c.receive(timeout=1.0)
                    self.replies += 1
                except MpcdTimeout:
                    pass

    def stop(self):
        self.stop_flag.set()
        self.join(timeout=5)
