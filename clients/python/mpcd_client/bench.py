"""End-to-end latency of mpcd from Python, with the daemon's default configuration.

    python -m mpcd_client.bench [--mpcd .build/release/mpcd] [--rate 200] [--seconds 10]
    python -m mpcd_client.bench --sessions 1,4,16 --rate 50 --seconds 30

With --sessions, only this: for each count, that many lockstep sessions, each in its own Python
process at --rate observations a second, against one daemon; the pooled round trips and daemon
compute times. Otherwise:

Starts the daemon twice on a free loopback port:

* lockstep: one observation every 1/rate s (a Pendulum-v1 state stepped by Gymnasium's equations
  with the returned actions); the round trip of each, measured by the client;
* realtime at --rate Hz: the client streams observations at the same rate and reads every tick's
  action; the daemon reports in each reply its compute time, how late the tick started against
  its grid, and the overrun count (missed ticks).

For scale it first measures, in the same run and at the same rate, a do-nothing baseline: a
pyzmq ROUTER that echoes every message back. Its round trip is the floor this machine's sockets,
scheduler and Python impose before any planning. Prints p50/p90/p99/p99.9/max of each figure.
"""
import argparse
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .client import Controller

REPO = Path(__file__).resolve().parents[3]


def free_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def start(mpcd, endpoint, *args, busy_poll_us=0, pin=None):
    extra = (f"busy_poll_us = {busy_poll_us}\n" if busy_poll_us else "") + (f"cpu_affinity = [{pin}]\n" if pin is not None else "")
    if extra:
        # the embedded default with [server] keys added (its [server] table comes last)
        text = subprocess.run([mpcd, "--print-default"], capture_output=True, text=True, check=True).stdout
        config = Path(tempfile.mkdtemp()) / "mpcd.toml"
        config.write_text(text + "\n" + extra)
        args = ("--config", str(config), *args)
    process = subprocess.Popen([mpcd, "--endpoint", endpoint, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if "listening" not in process.stdout.readline():
        process.kill()
        raise SystemExit(f"{mpcd} did not start")
    return process


def stop(process):
    process.terminate()
    process.wait(timeout=5)


def summary(name, values_ms):
    a = np.asarray(values_ms)
    qs = [50, 90, 99, 99.9]
    cells = "  ".join(f"p{q:g} {np.percentile(a, q):7.3f}" for q in qs)
    print(f"  {name:<28} {cells}  max {a.max():7.3f}  (ms, n={len(a)})")
    return {f"p{q:g}": float(np.percentile(a, q)) for q in qs} | {"max": float(a.max()), "n": len(a)}


class Pendulum:
    """Gymnasium Pendulum-v1's step, so observations move the way a simulator's would."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.th, self.thdot = rng.uniform(-math.pi, math.pi), rng.uniform(-1, 1)

    def observe(self):
        return np.array([math.cos(self.th), math.sin(self.th), self.thdot])

    def step(self, u, dt=0.05):
        u = float(np.clip(u, -2, 2))
        self.thdot = float(np.clip(self.thdot + (15 * math.sin(self.th) + 3 * u) * dt, -8, 8))
        self.th += self.thdot * dt


ECHO_SERVER = """
import sys, zmq
s = zmq.Context().socket(zmq.ROUTER)
s.bind(sys.argv[1])
print("listening", flush=True)
while True:
    s.send_multipart(s.recv_multipart())
"""


def paced_round_trips(endpoint, rate, seconds, act):
    """Round trips (ms) of act(state) called once every 1/rate s on a simulated pendulum."""
    sim = Pendulum(0)
    period = 1.0 / rate
    round_trips = []
    next_send = time.perf_counter()
    end = next_send + seconds
    while next_send < end:
        while time.perf_counter() < next_send:
            time.sleep(min(0.0005, max(0.0, next_send - time.perf_counter())))
        start_time = time.perf_counter()
        action = act(sim.observe())
        round_trips.append((time.perf_counter() - start_time) * 1e3)
        sim.step(action)
        next_send += period
    return round_trips


def echo_baseline(rate, seconds):
    import zmq

    from . import protocol

    endpoint = free_endpoint()
    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, endpoint], stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        sequence = [0]

        def act(state):
            sequence[0] += 1
            s.send_multipart(protocol.observation(sequence[0], state))
            s.recv_multipart()
            return 0.0

        round_trips = paced_round_trips(endpoint, rate, seconds, act)
        s.close()
        print(f"baseline: a pyzmq ROUTER echo, {rate:g} messages/s for {seconds:g} s:")
        return {"round_trip": summary("round trip", round_trips[10:])}
    finally:
        server.kill()
        server.wait()


def lockstep(mpcd, rate, seconds, busy_poll_us=0, pin=None):
    endpoint = free_endpoint()
    process = start(mpcd, endpoint, busy_poll_us=busy_poll_us, pin=pin)
    if pin is not None:
        os.sched_setaffinity(0, {pin})
    try:
        compute = []
        with Controller(endpoint, timeout=2.0) as c:
            c.info

            def act(state):
                action = c.act(state)
                compute.append(c.last.diagnostics["compute_seconds"] * 1e3)
                return action[0]

            round_trips = paced_round_trips(endpoint, rate, seconds, act)
        print(f"lockstep, {rate:g} observations/s for {seconds:g} s" + (f", busy_poll_us = {busy_poll_us}" if busy_poll_us else "")
              + (f", daemon and client on CPU {pin} (cpu_affinity = [{pin}])" if pin is not None else "") + ":")
        return {"round_trip": summary("round trip", round_trips[10:]), "compute": summary("daemon compute", compute[10:])}
    finally:
        stop(process)
        if pin is not None:
            os.sched_setaffinity(0, range(os.cpu_count()))


def realtime(mpcd, rate, seconds, busy_poll_us=0):
    endpoint = free_endpoint()
    process = start(mpcd, endpoint, "--mode", "realtime", "--rate-hz", str(rate), busy_poll_us=busy_poll_us)
    try:
        compute, lateness, sends, ticks = [], [], [], []
        overruns = 0
        with Controller(endpoint, timeout=2.0) as c:
            c.info
            sim = Pendulum(1)
            c.send_observation(sim.observe())
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                reply = c.receive()
                d = reply.diagnostics
                compute.append(d["compute_seconds"] * 1e3)
                lateness.append(d["tick_lateness_seconds"] * 1e3)
                sends.append((d["tick_lateness_seconds"] + d["compute_seconds"]) * 1e3)
                ticks.append(reply.tick)
                overruns = int(d["overruns"])
                sim.step(reply.action[0], dt=1.0 / rate)
                c.send_observation(sim.observe())
        ticks = np.asarray(ticks[10:])
        gaps = int(np.sum(np.diff(ticks) - 1)) if len(ticks) > 1 else 0
        print(f"realtime at {rate:g} Hz for {seconds:g} s: {len(ticks)} ticks received, {gaps} tick numbers skipped, daemon overruns {overruns}")
        return {
            "compute": summary("tick compute", compute[10:]),
            "tick_lateness": summary("tick start after grid", lateness[10:]),
            "send_lateness": summary("action sent after grid", sends[10:]),
            "overruns": overruns,
            "skipped": gaps,
        }
    finally:
        stop(process)


def _session_worker(endpoint, rate, seconds, seed, start_at, out):
    """One lockstep session in its own process (no shared GIL): paced round trips from start_at."""
    with Controller(endpoint, timeout=5.0) as c:
        c.info
        compute = []

        def act(state):
            action = c.act(state)
            compute.append(c.last.diagnostics["compute_seconds"] * 1e3)
            return action[0]

        # spread the sessions' phases over one period, as independent robots would be
        time.sleep(max(0.0, start_at - time.time()) + (seed % 97) / 97.0 / rate)
        out.put((paced_round_trips(endpoint, rate, seconds, act)[10:], compute[10:]))


def sessions(mpcd, count, rate, seconds):
    """`count` lockstep sessions at `rate` observations/s each, each from its own process, against one
    daemon on its default configuration; returns the pooled round trips and daemon compute times."""
    import multiprocessing

    endpoint = free_endpoint()
    process = start(mpcd, endpoint)
    try:
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        start_at = time.time() + 1.0 + 0.05 * count  # after every worker has started and connected
        workers = [context.Process(target=_session_worker, args=(endpoint, rate, seconds, i, start_at, out)) for i in range(count)]
        for w in workers:
            w.start()
        round_trips, compute = [], []
        for _ in workers:
            r, c = out.get(timeout=seconds + 60)
            round_trips += r
            compute += c
        for w in workers:
            w.join(timeout=10)
        print(f"{count} lockstep session{'s' if count > 1 else ''}, {rate:g} observations/s each for {seconds:g} s:")
        return {"sessions": count, "round_trip": summary("round trip", round_trips), "compute": summary("daemon compute", compute)}
    finally:
        stop(process)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mpcd_client.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mpcd", default=os.environ.get("MPCD_BIN", str(REPO / ".build" / "release" / "mpcd")))
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--busy-poll-us", type=int, default=0, help="also run lockstep with [server] busy_poll_us set to this")
    parser.add_argument("--pin", type=int, default=None, help="also run lockstep with the daemon (cpu_affinity) and this client on this CPU")
    parser.add_argument("--sessions", default="", help="instead: comma-separated session counts, each run at --rate per session (e.g. 1,4,16)")
    args = parser.parse_args(argv)
    if args.sessions:
        for count in [int(n) for n in args.sessions.split(",")]:
            sessions(args.mpcd, count, args.rate, args.seconds)
        return 0
    echo_baseline(args.rate, args.seconds)
    lockstep(args.mpcd, args.rate, args.seconds)
    if args.busy_poll_us:
        lockstep(args.mpcd, args.rate, args.seconds, args.busy_poll_us)
    if args.pin is not None:
        lockstep(args.mpcd, args.rate, args.seconds, pin=args.pin)
    realtime(args.mpcd, args.rate, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
