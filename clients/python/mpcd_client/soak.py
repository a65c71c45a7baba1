"""Long runs against the real daemon: memory, errors and missed ticks under steady load.

    python -m mpcd_client.soak --seconds 1800 --rate 500 --sessions 4          # the soak
    python -m mpcd_client.soak --seconds 300 --rate 100 --sessions 1 --stress  # CPU contention
    python -m mpcd_client.soak --seconds 300 --rate 200 --sessions 4 --compare-recording  # recording's cost

Starts mpcd with its default configuration in realtime mode at --rate Hz and drives --sessions
simulated pendulums from one thread (one DEALER socket each, polled together), each sending its
newest state after every action. Samples the daemon's resident memory every 5 s. With --stress,
`stress-ng --cpu 1` loads one core for the whole run. Prints a summary: replies, error replies,
gaps in the tick numbers (missed ticks as the clients saw them), the daemon's own overrun count,
and resident memory after warm-up and at the end. Exits 1 if a limit given with --max-rss-growth-kib
or --max-missed-fraction is exceeded.

With --compare-recording, the same load runs with tick recording off and on (docs/recording.md), in
alternating blocks of --block seconds (--seconds each way in all), so that both see the same machine;
it prints tick lateness percentiles and missed ticks of each, and checks the recordings' folder never
exceeded its budget (--budget-mb, files of --file-mb).
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


def recording_config(mpcd, folder, file_mb, budget_mb):
    """The embedded default with a [recording] table, as a file in `folder`'s parent."""
    text = subprocess.run([mpcd, "--print-default"], check=True, capture_output=True, text=True).stdout
    text += f'\n[recording]\ndirectory = "{folder}"\nenabled = true\nfile_mb = {file_mb}\nbudget_mb = {budget_mb}\n'
    path = Path(folder).parent / "soak-recording.toml"
    path.write_text(text)
    return path


def folder_bytes(folder):
    return sum(f.stat().st_size for f in Path(folder).glob("*.arrows")) if Path(folder).exists() else 0


def run(mpcd, seconds, rate, sessions, stress, warmup, config=None, folder=None):
    endpoint = free_endpoint()
    env = dict(os.environ, RUNTIME_DIRECTORY=f"/tmp/mpcd-soak-{os.getpid()}")
    daemon = subprocess.Popen([mpcd, "--endpoint", endpoint, "--mode", "realtime", "--rate-hz", str(rate)]
                              + (["--config", str(config)] if config else []),
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
        lateness = []
        largest_folder = 0
        last_tick = [None] * sessions
        overruns = 0
        memory = []
        start = time.monotonic()
        next_sample = start + 5
        # per session: one session the daemon stops serving while others go on is a silence too
        last_reply, longest_silence = [start] * sessions, 0.0
        while time.monotonic() - start < seconds:
            for s, _ in poller.poll(1000):
                i = sockets.index(s)
                arrived = time.monotonic()
                longest_silence = max(longest_silence, arrived - last_reply[i])
                last_reply[i] = arrived
                reply = protocol.decode(s.recv_multipart(), 1, names)
                if isinstance(reply, protocol.ErrorReply):
                    errors += 1
                    continue
                replies += 1
                if last_tick[i] is not None and reply.tick > last_tick[i] + 1:
                    gaps += reply.tick - last_tick[i] - 1
                last_tick[i] = reply.tick
                overruns = max(overruns, int(reply.diagnostics["overruns"]))
                lateness.append(reply.diagnostics["tick_lateness_seconds"])
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
                if folder:
                    largest_folder = max(largest_folder, folder_bytes(folder))
        elapsed = time.monotonic() - start
        # a daemon that stopped serving near the end shows as silence up to the end of the run
        longest_silence = max([longest_silence] + [start + elapsed - t for t in last_reply])
        for s in sockets:
            s.close()
        expected = rate * elapsed
        after_warmup = [kib for t, kib in memory if t >= warmup] or [m[1] for m in memory[-1:]]
        result = {
            "seconds": round(elapsed, 1), "rate_hz": rate, "sessions": sessions, "stress": bool(stress),
            "replies": replies, "error_replies": errors, "tick_gaps_seen": gaps, "daemon_overruns": overruns,
            "longest_silence_s": round(longest_silence, 3),
            "missed_fraction": overruns / expected if expected else 0.0,
            "rss_kib_after_warmup": after_warmup[0] if after_warmup else None,
            "rss_kib_end": memory[-1][1] if memory else None,
            "rss_growth_kib": (memory[-1][1] - after_warmup[0]) if memory and after_warmup else None,
            "rss_samples": memory,
            "lateness_ms": np.asarray(lateness) * 1e3,
            "largest_folder_bytes": largest_folder,
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
    parser.add_argument("--compare-recording", action="store_true", help="run with tick recording off and on, alternating")
    parser.add_argument("--block", type=float, default=60, help="--compare-recording: seconds per block")
    parser.add_argument("--file-mb", type=float, default=8)
    parser.add_argument("--budget-mb", type=float, default=64)
    args = parser.parse_args(argv)
    if args.compare_recording:
        return compare_recording(args)
    r = run(args.mpcd, args.seconds, args.rate, args.sessions, args.stress, min(args.warmup, args.seconds / 2))
    r["lateness_ms"] = r["lateness_ms"].tolist()
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['seconds']} s at {r['rate_hz']:g} Hz, {r['sessions']} session(s){', one core loaded by stress-ng' if r['stress'] else ''}:")
        print(f"  replies {r['replies']}, error replies {r['error_replies']}, tick gaps seen by clients {r['tick_gaps_seen']}, "
              f"daemon overruns {r['daemon_overruns']} ({100 * r['missed_fraction']:.3f}% of ticks), "
              f"longest silence {r['longest_silence_s']:.3f} s")
        print(f"  resident memory after warm-up {r['rss_kib_after_warmup']} KiB, at the end {r['rss_kib_end']} KiB, "
              f"growth {r['rss_growth_kib']} KiB")
    failed = (args.max_rss_growth_kib is not None and (r["rss_growth_kib"] or 0) > args.max_rss_growth_kib) or \
             (args.max_missed_fraction is not None and r["missed_fraction"] > args.max_missed_fraction) or r["error_replies"] > 0
    return 1 if failed else 0


def compare_recording(args):
    """Recording off and on in alternating blocks; lateness percentiles, missed ticks, the budget."""
    import tempfile
    folder = Path(tempfile.mkdtemp(prefix="mpcd-soak-")) / "recordings"
    config = recording_config(args.mpcd, folder, args.file_mb, args.budget_mb)
    blocks = max(1, math.ceil(args.seconds / args.block))
    results = {"off": [], "on": []}
    for block in range(blocks):
        order = ("off", "on") if block % 2 == 0 else ("on", "off")
        for mode in order:
            r = run(args.mpcd, args.seconds / blocks, args.rate, args.sessions, args.stress, 0,
                    config=config if mode == "on" else None, folder=folder if mode == "on" else None)
            results[mode].append(r)
            print(f"block {block + 1}/{blocks}, recording {mode:3}: {r['replies']} replies, {r['daemon_overruns']} missed ticks, "
                  f"lateness p99 {np.percentile(r['lateness_ms'], 99):.3f} ms", flush=True)
    budget = args.budget_mb * 1048576
    largest = max([r["largest_folder_bytes"] for r in results["on"]] + [folder_bytes(folder)])
    files = sorted(folder.glob("*.arrows"))
    print(f"{args.seconds:g} s each way at {args.rate:g} Hz x {args.sessions} sessions, blocks of {args.seconds / blocks:g} s:")
    print("| recording | replies | missed ticks | lateness p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for mode in ("off", "on"):
        late = np.concatenate([r["lateness_ms"] for r in results[mode]])
        missed = sum(r["daemon_overruns"] for r in results[mode])
        replies = sum(r["replies"] for r in results[mode])
        p = np.percentile(late, [50, 99, 99.9])
        summary[mode] = (p[1], missed)
        print(f"| {mode} | {replies} | {missed} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} | {late.max():.3f} |")
    # block by block, each "on" block against the "off" block run next to it
    p99 = {mode: [np.percentile(r["lateness_ms"], 99) for r in results[mode]] for mode in results}
    later = sum(on > off for on, off in zip(p99["on"], p99["off"]))
    earlier = sum(on < off for on, off in zip(p99["on"], p99["off"]))
    print(f"block by block: p99 with recording later in {later} of {blocks} blocks, earlier in {earlier}; median block p99 "
          f"off {np.median(p99['off']):.3f} ms, on {np.median(p99['on']):.3f} ms; blocks with missed ticks off "
          f"{sum(r['daemon_overruns'] > 0 for r in results['off'])}, on {sum(r['daemon_overruns'] > 0 for r in results['on'])}")
    print(f"recordings: {len(files)} files, {folder_bytes(folder) / 1048576:.1f} MiB at the end, at most {largest / 1048576:.1f} MiB "
          f"seen (budget {args.budget_mb:g} MiB): {'held' if largest <= budget else 'EXCEEDED'}; folder {folder}")
    return 0 if largest <= budget else 1


if __name__ == "__main__":
    sys.exit(main())
