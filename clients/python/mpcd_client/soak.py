"""Long runs against the real daemon: memory, errors and missed ticks under steady load.

    python -m mpcd_client.soak --seconds 1800 --rate 500 --sessions 4          # the soak
    python -m mpcd_client.soak --seconds 300 --rate 100 --sessions 1 --stress  # CPU contention

Starts mpcd with its default configuration in realtime mode at --rate Hz and drives --sessions
simulated pendulums from one thread (one DEALER socket each, polled together), each sending its
newest state after every action. Samples the daemon's resident memory every 5 s. With --stress,
`stress-ng --cpu 1` loads one core for the whole run. Prints a summary: replies, error replies,
gaps in the tick numbers (missed ticks as the clients saw them), the daemon's own overrun count,
and resident memory after warm-up and at the end. Exits 1 if a limit given with --max-rss-growth-kib
or --max-missed-fraction is exceeded.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zmq

from . import protocol
from .bench import free_endpoint

REPO = Path(__file__).resolve().parents[3]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def run(mpcd, seconds, rate, sessions, stress, warmup):
    endpoint = free_endpoint()
    env = dict(os.environ, RUNTIME_DIRECTORY=f"/tmp/mpcd-soak-{os.getpid()}")
    daemon = subprocess.Popen([mpcd, "--endpoint", endpoint, "--mode", "realtime", "--rate-hz", str(rate)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    stressor = None
    try:
        if "listening" not in daemon.stdout.readline():
            raise SystemExit("mpcd did not start")
        if stress:
            if shutil.which("stress-ng") is None:
                raise SystemExit("--stress needs stress-ng (apt-get install stress-ng)")
            stressor = subprocess.Popen(["stress-ng", "--cpu", "1", "--timeout", f"{int(seconds) + 30}s", "--quiet"])
        context = zmq.Context.instance()
        poller = zmq.Poller()
        sockets, states = [], []
        for i in range(sessions):
            s = context.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.IDENTITY, f"soak-{i}".encode())
            s.connect(endpoint)
            poller.register(s, zmq.POLLIN)
            sockets.append(s)
            states.append([math.pi - 0.5 * i, 0.0])
        sockets[0].send_multipart(protocol.hello())
        names = protocol.decode(sockets[0].recv_multipart())["diagnostics"]
        sequence = [0] * sessions
        for i, s in enumerate(sockets):
            sequence[i] += 1
            s.send_multipart(protocol.observation(sequence[i], np.array(states[i])))
        replies = errors = gaps = 0
        last_tick = [None] * sessions
        overruns = 0
        memory = []
        start = time.monotonic()
        next_sample = start + 5
        while time.monotonic() - start < seconds:
            for s, _ in poller.poll(1000):
                i = sockets.index(s)
                reply = protocol.decode(s.recv_multipart(), 1, names)
                if isinstance(reply, protocol.ErrorReply):
                    errors += 1
                    continue
                replies += 1
                if last_tick[i] is not None and reply.tick > last_tick[i] + 1:
                    gaps += reply.tick - last_tick[i] - 1
                last_tick[i] = reply.tick
                overruns = max(overruns, int(reply.diagnostics["overruns"]))
                th, thdot = states[i]
                u = float(np.clip(reply.action[0], -2, 2))
                dt = 1.0 / rate
                thdot = float(np.clip(thdot + (15 * math.sin(th) + 3 * u) * dt, -8, 8))
                states[i] = [th + thdot * dt, thdot]
                sequence[i] += 1
                s.send_multipart(protocol.observation(sequence[i], np.array(states[i])))
            now = time.monotonic()
            if now >= next_sample:
                memory.append((now - start, rss_kib(daemon.pid)))
                next_sample += 5
        elapsed = time.monotonic() - start
        for s in sockets:
            s.close()
        expected = rate * elapsed
        after_warmup = [kib for t, kib in memory if t >= warmup] or [m[1] for m in memory[-1:]]
        result = {
            "seconds": round(elapsed, 1), "rate_hz": rate, "sessions": sessions, "stress": bool(stress),
            "replies": replies, "error_replies": errors, "tick_gaps_seen": gaps, "daemon_overruns": overruns,
            "missed_fraction": overruns / expected if expected else 0.0,
            "rss_kib_after_warmup": after_warmup[0] if after_warmup else None,
            "rss_kib_end": memory[-1][1] if memory else None,
            "rss_growth_kib": (memory[-1][1] - after_warmup[0]) if memory and after_warmup else None,
            "rss_samples": memory,
        }
        return result
    finally:
        if stressor is not None:
            stressor.terminate()
            stressor.wait()
        daemon.terminate()
        daemon.wait(timeout=10)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mpcd_client.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mpcd", default=os.environ.get("MPCD_BIN", str(REPO / ".build" / "release" / "mpcd")))
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--stress", action="store_true")
    parser.add_argument("--warmup", type=float, default=60, help="seconds before the memory baseline")
    parser.add_argument("--max-rss-growth-kib", type=float, default=None)
    parser.add_argument("--max-missed-fraction", type=float, default=None)
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = parser.parse_args(argv)
    r = run(args.mpcd, args.seconds, args.rate, args.sessions, args.stress, min(args.warmup, args.seconds / 2))
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['seconds']} s at {r['rate_hz']:g} Hz, {r['sessions']} session(s){', one core loaded by stress-ng' if r['stress'] else ''}:")
        print(f"  replies {r['replies']}, error replies {r['error_replies']}, tick gaps seen by clients {r['tick_gaps_seen']}, "
              f"daemon overruns {r['daemon_overruns']} ({100 * r['missed_fraction']:.3f}% of ticks)")
        print(f"  resident memory after warm-up {r['rss_kib_after_warmup']} KiB, at the end {r['rss_kib_end']} KiB, "
              f"growth {r['rss_growth_kib']} KiB")
    failed = (args.max_rss_growth_kib is not None and (r["rss_growth_kib"] or 0) > args.max_rss_growth_kib) or \
             (args.max_missed_fraction is not None and r["missed_fraction"] > args.max_missed_fraction) or r["error_replies"] > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
