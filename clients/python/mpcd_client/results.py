"""Control results through the daemon: each row starts mpcd with a configuration and runs
Gymnasium episodes through it with the bridge.

    python -m mpcd_client.results [--mpcd .build/release/mpcd]

Prints one table (environment, configuration, seeds, mean and std of the return, episodes that
reached the goal, round-trip p50/p99) in Markdown, for docs/benchmarks.md.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from .bench import free_endpoint
from .gym import percentiles, run_episodes

REPO = Path(__file__).resolve().parents[3]

# (environment, configuration file or None for the embedded default, first seed, episodes)
ROWS = [
    ("Pendulum-v1", None, 0, 10),
    ("Pendulum-v1", None, 0, 20),
    ("MountainCarContinuous-v0", "deploy/config/mountain_car.toml", 0, 10),
]


def run_row(mpcd, env, config, seed, episodes):
    endpoint = free_endpoint()
    args = [mpcd, "--endpoint", endpoint] + (["--config", str(REPO / config)] if config else [])
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        if "listening" not in process.stdout.readline():
            raise SystemExit(f"{mpcd} did not start")
        lines = []
        returns, _, latencies, _ = run_episodes(env, episodes, seed, endpoint, out=lines.append)
        reached = sum("terminated" in line for line in lines)
        return returns, reached, percentiles(latencies)
    finally:
        process.terminate()
        process.wait(timeout=5)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mpcd_client.results", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mpcd", default=os.environ.get("MPCD_BIN", str(REPO / ".build" / "release" / "mpcd")))
    args = parser.parse_args(argv)
    print("| environment | configuration | seeds | mean return | std | reached goal | round trip p50 / p99 (ms) |")
    print("|---|---|---|---:|---:|---:|---|")
    for env, config, seed, episodes in ROWS:
        returns, reached, latency = run_row(args.mpcd, env, config, seed, episodes)
        goal = f"{reached}/{episodes}" if env.startswith("MountainCar") else "-"
        print(f"| {env} | {config or 'embedded default'} | {seed}-{seed + episodes - 1} | {np.mean(returns):.1f} | {np.std(returns):.1f} | {goal} | {latency['p50']:.3f} / {latency['p99']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
