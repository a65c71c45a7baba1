#!/usr/bin/env python3
"""How mpcd's cost grows: planner time per iteration against K and against H, and end-to-end latency
with 1, 4 and 16 sessions at 50 Hz each. Writes a table and docs/scaling.png into docs/benchmarks.md.

    .venv/bin/python benchmarks/scaling.py [--seconds 30] [--no-docs]     (part of `make bench`)

- K sweep: Pendulum-v1, H=32, K from 128 to 8192, 1 and 2 threads (`mpcd-bench planner --json`);
- H sweep: K=1024, H from 8 to 256, 1 and 2 threads;
- sessions: one daemon on its default configuration, N lockstep sessions each in its own Python
  process at 50 observations a second (`python -m mpcd_client.bench --sessions`).

For each sweep it fits time = a + b x (K x H) by least squares and prints a (a fixed cost per
iteration), b (ns per sample-step) and R^2: linear growth shows as R^2 close to 1.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "clients" / "python"))
from mpcd_client import bench  # noqa: E402
from mpcd_client.docblock import write_block  # noqa: E402

BENCH = REPO / ".build" / "release" / "mpcd-bench"
SAMPLES = [128, 256, 512, 1024, 2048, 4096, 8192]
HORIZONS = [8, 16, 32, 64, 128, 256]


def planner_cells(samples, horizons, repeats):
    out = subprocess.run([str(BENCH), "planner", "--samples", ",".join(map(str, samples)), "--horizons", ",".join(map(str, horizons)),
                          "--threads", "1,2", "--repeats", str(repeats), "--json"], capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def linear_fit(cells, key):
    """Least-squares time = a + b * (K*H); returns (a in us, b in ns per sample-step, R^2)."""
    x = np.array([c["samples"] * c["horizon"] for c in cells], dtype=float)
    y = np.array([c[key] for c in cells])
    b, a = np.polyfit(x, y, 1)
    residual = y - (a + b * x)
    return a, b * 1000, float(1 - residual @ residual / ((y - y.mean()) @ (y - y.mean())))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each sessions run")
    parser.add_argument("--repeats", type=int, default=300, help="timed iterations per planner cell")
    parser.add_argument("--sessions", default="1,4,16")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()

    print("planner time per iteration against K (H=32) and against H (K=1024), 1 and 2 threads", flush=True)
    by_k = planner_cells(SAMPLES, [32], args.repeats)
    by_h = planner_cells([1024], HORIZONS, args.repeats)
    lines = ["| sweep | threads | time per iteration, all-in p50 (us) | prepared p50 (us) | fit (all-in): a (us) | b (ns per sample-step) | R^2 |",
             "|---|---:|---|---|---:|---:|---:|"]
    for label, cells, axis in (("K (H=32)", by_k, "samples"), ("H (K=1024)", by_h, "horizon")):
        for threads in (1, 2):
            row = [c for c in cells if c["threads"] == threads]
            intercept, slope, r2 = linear_fit(row, "all_in_us_p50")
            all_in = ", ".join(f"{c[axis]}: {c['all_in_us_p50']:.0f}" for c in row)
            prepared = ", ".join(f"{c[axis]}: {c['prepared_us_p50']:.0f}" for c in row)
            lines.append(f"| {label} | {threads} | {all_in} | {prepared} | {intercept:.1f} | {slope:.2f} | {r2:.3f} |")
    print("\n".join(lines), flush=True)

    print(f"\nend to end: {args.sessions} lockstep sessions at {args.rate:g} Hz each, {args.seconds:g} s", flush=True)
    counts = [int(n) for n in args.sessions.split(",")]
    runs = [bench.sessions(str(REPO / ".build" / "release" / "mpcd"), n, args.rate, args.seconds) for n in counts]
    session_lines = ["| sessions | observations/s in all | round trip p50 (ms) | p99 (ms) | p99.9 (ms) | daemon compute p50 (ms) | p99 (ms) |",
                     "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        rt, cp = r["round_trip"], r["compute"]
        session_lines.append(f"| {r['sessions']} | {r['sessions'] * args.rate:g} | {rt['p50']:.3f} | {rt['p99']:.3f} | {rt['p99.9']:.3f} | "
                             f"{cp['p50']:.3f} | {cp['p99']:.3f} |")
    print("\n".join(session_lines))
    if not args.no_docs:
        write_docs(by_k, by_h, runs, "\n".join(lines), "\n".join(session_lines), args)


def write_docs(by_k, by_h, runs, planner_table, session_table, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, cells, axis, label in ((axes[0], by_k, "samples", "K (samples), H=32"), (axes[1], by_h, "horizon", "H (horizon), K=1024")):
        for threads, style in ((1, "o-"), (2, "s--")):
            row = [c for c in cells if c["threads"] == threads]
            x = [c[axis] for c in row]
            ax.plot(x, [c["all_in_us_p50"] for c in row], style, label=f"all-in, {threads} thread{'s' if threads > 1 else ''}")
            ax.plot(x, [c["prepared_us_p50"] for c in row], style, alpha=0.5, label=f"prepared noise, {threads} thread{'s' if threads > 1 else ''}")
        ax.set_xlabel(label)
        ax.set_ylabel("time per iteration, p50 (us)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    counts = [r["sessions"] for r in runs]
    ax = axes[2]
    for q, style in (("p50", "o-"), ("p99", "s-"), ("p99.9", "^:")):
        ax.plot(counts, [r["round_trip"][q] for r in runs], style, label=f"round trip {q}")
    ax.plot(counts, [r["compute"]["p50"] for r in runs], "x--", label="daemon compute p50")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel(f"sessions, {args.rate:g} Hz each")
    ax.set_ylabel("ms")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(REPO / "docs" / "scaling.png", dpi=90)
    write_block(REPO / "docs" / "benchmarks.md", "scaling",
                f"Planner time per iteration (Pendulum-v1, MPPI, `mpcd-bench planner --json`, {args.repeats} timed calls per cell); "
                f"the fit is time = a + b x K x H over each sweep:\n\n{planner_table}\n\n"
                f"End to end from Python: one daemon on its default configuration, each session a separate Python process "
                f"sending {args.rate:g} observations a second in lockstep for {args.seconds:g} s:\n\n{session_table}\n\n"
                f"![scaling](scaling.png)")
    print("wrote docs/benchmarks.md and docs/scaling.png")


if __name__ == "__main__":
    main()
