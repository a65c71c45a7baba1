"""Gymnasium's MuJoCo environments through the daemon: each shipped configuration in
deploy/config/mujoco, lockstep, through the Gymnasium bridge (which sends the simulation's whole
state), over the seeds the acceptance of the MuJoCo work names.

    python -m mpcd_client.mujoco_results [--tasks inverted_pendulum reacher ...] [--no-docs]

Prints a Markdown table (environment, configuration, seeds, mean and std of the return, the
lowest, the steps the episodes lasted, and the daemon's compute per step: p50 and p99 of the
`compute_seconds` diagnostic) and, unless --no-docs, writes it into docs/models.md between its
result markers, with a plot of every episode's return in docs/mujoco.png. Every row's figures are
kept in docs/mujoco_results.json with the date and commit they were measured at, so a run of some
--tasks replaces those rows and keeps the others (the table says when each was measured).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .bench import free_endpoint
from .docblock import write_block
from .gym import run_episodes

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "deploy" / "config" / "mujoco"

# (configuration, Gymnasium environment, first seed, episodes)
ROWS = {
    "inverted_pendulum": ("InvertedPendulum-v5", 0, 10),
    "inverted_double_pendulum": ("InvertedDoublePendulum-v5", 0, 10),
    "reacher": ("Reacher-v5", 0, 10),
    "half_cheetah": ("HalfCheetah-v5", 0, 5),
}


def run_row(mpcd, name, env_id, seed, episodes):
    endpoint = free_endpoint()
    process = subprocess.Popen([mpcd, "--endpoint", endpoint, "--config", str(CONFIGS / f"{name}.toml")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        if "listening" not in process.stdout.readline():
            raise SystemExit(f"{mpcd} did not start with {name}.toml")
        lines = []
        started = time.monotonic()
        returns, rows, _, _ = run_episodes(env_id, episodes, seed, endpoint, timeout=60, out=lambda line: (lines.append(line), print(f"  {line}", file=sys.stderr, flush=True)))
        # compute_ms is the fourth column from the end of every row the bridge records
        compute_ms = np.array([row[-2] for row in rows], dtype=float)
        steps = [int(line.split("steps")[1].split()[0]) for line in lines]
        return {"name": name, "env": env_id, "seeds": f"{seed}-{seed + episodes - 1}", "returns": returns, "steps": steps,
                "compute_p50_ms": float(np.nanpercentile(compute_ms, 50)), "compute_p99_ms": float(np.nanpercentile(compute_ms, 99)),
                "seconds": time.monotonic() - started}
    finally:
        process.terminate()
        process.wait(timeout=10)


def table(results):
    out = ["| environment | configuration | seeds | mean return | std | lowest | steps per episode | compute per step p50 / p99 (ms) | measured |",
           "|---|---|---|---:|---:|---:|---|---|---|"]
    for r in results:
        steps = f"{min(r['steps'])}-{max(r['steps'])}" if min(r["steps"]) != max(r["steps"]) else str(r["steps"][0])
        out.append(f"| {r['env']} | `deploy/config/mujoco/{r['name']}.toml` | {r['seeds']} | {np.mean(r['returns']):.1f} | {np.std(r['returns']):.1f} | "
                   f"{min(r['returns']):.1f} | {steps} | {r['compute_p50_ms']:.1f} / {r['compute_p99_ms']:.1f} | {r.get('measured', '')} |")
    return "\n".join(out)


def merged(results, path):
    """The rows of this run, and of an earlier one (from `path`) for the tasks this run left out."""
    earlier = {r["name"]: r for r in json.loads(path.read_text())} if path.exists() else {}
    earlier.update({r["name"]: r for r in results})
    return [earlier[name] for name in ROWS if name in earlier]


# what a row's figures depend on: a change here that is not committed yet is not the commit's
MEASURED_PATHS = ["Sources", "deploy", "clients", "benchmarks", "Package.swift"]


def commit(repo=REPO):
    """HEAD's short hash, with "+ uncommitted changes" when the code or configurations differ from
    it, a new file among them included (the row was then measured on something no commit holds);
    "?" outside a git checkout. It describes the tree, not a binary given by --mpcd."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=normal", "--", *MEASURED_PATHS],
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + (" + uncommitted changes" if changed else "")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.2))
    axes = np.atleast_1d(axes)
    for ax, r in zip(axes, results):
        ax.bar(range(len(r["returns"])), r["returns"])
        ax.set_title(f"{r['env']}\nmean {np.mean(r['returns']):.1f}", fontsize=9)
        ax.set_xlabel("episode (seed)")
    axes[0].set_ylabel("return")
    fig.suptitle("Gymnasium MuJoCo environments through mpcd (lockstep, the shipped configurations)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mpcd_client.mujoco_results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mpcd", default=os.environ.get("MPCD_BIN", str(REPO / ".build" / "release" / "mpcd")))
    parser.add_argument("--tasks", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--no-docs", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    # stamped before the run: what the tree was when the episodes started
    measured = f"{time.strftime('%Y-%m-%d')}, {commit()}"
    results = []
    for name in args.tasks:
        env_id, seed, episodes = ROWS[name]
        print(f"{name}: {env_id}, seeds {seed}-{seed + episodes - 1}", file=sys.stderr, flush=True)
        row = run_row(args.mpcd, name, env_id, seed, episodes)
        row["measured"] = measured
        results.append(row)
    print(table(results))
    if not args.no_docs:
        docs, store = REPO / "docs" / "models.md", REPO / "docs" / "mujoco_results.json"
        rows = merged(results, store)
        store.write_text(json.dumps(rows, indent=1) + "\n")
        write_block(docs, "results", f"`python -m mpcd_client.mujoco_results` (rows of a run with `--tasks` keep the others):\n\n"
                    f"{table(rows)}\n\n![returns](mujoco.png)")
        plot(rows, REPO / "docs" / "mujoco.png")
        print(f"wrote {docs} and docs/mujoco.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
