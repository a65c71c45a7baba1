#!/usr/bin/env python3
"""mpcd against the MPPI controllers people run today, in one run, on Gymnasium Pendulum-v1.

    scripts/peer_bench.sh          # makes the venv (torch, pytorch-mppi, gymnasium), builds, runs this

Every controller uses the same K samples, H horizon, temperature lambda, exploration noise (std of the
torque), one iteration per command, and the same 20 episodes (Gymnasium's resets with seeds 0-19):

- pytorch_mppi (the package), on the CPU;
- a vectorised numpy MPPI (below, written for this benchmark);
- mpcd's planner in process (`mpcd-bench episodes`, on mpcd's Pendulum-v1 model, which matches
  Gymnasium step for step), timing all the work of a command including its noise, with one thread
  and with one per core (torch uses every core by default);
- mpcd end to end: the daemon, planning the same way, driven by Gymnasium through the Python client,
  timing the round trip.

Prints one table (time per command p50/p99, return mean and std over the 20 episodes, mpcd's
speed-up over each peer) and writes it with a plot into docs/benchmarks.md.
"""
import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "clients" / "python"))
from mpcd_client import Controller  # noqa: E402
from mpcd_client.docblock import write_block  # noqa: E402

MAX_TORQUE, DT, G, M, L = 2.0, 0.05, 10.0, 1.0, 1.0


def angle_normalize(x):
    return ((x + math.pi) % (2 * math.pi)) - math.pi


def starts(seeds):
    env = gym.make("Pendulum-v1")
    out = []
    for s in seeds:
        env.reset(seed=s)
        out.append([float(v) for v in env.unwrapped.state])
    return out


def episode(command, start, seed, steps):
    """Runs Gymnasium Pendulum-v1 from `start` with `command(state) -> torque`; returns (return, times)."""
    env = gym.make("Pendulum-v1")
    env.reset(seed=seed)
    env.unwrapped.state = np.array(start)
    total, times = 0.0, []
    for _ in range(steps):
        state = env.unwrapped.state.copy()
        t0 = time.perf_counter()
        u = command(state)
        times.append((time.perf_counter() - t0) * 1e6)
        _, reward, _, _, _ = env.step(np.array([u], dtype=np.float32))
        total += reward
    return total, times


class NumpyMPPI:
    """A vectorised MPPI in numpy: K sampled sequences rolled out together, exp(-(J - J_min)/lambda)
    weights, the mean updated and shifted each command."""

    def __init__(self, k, h, lam, sigma, seed):
        self.k, self.h, self.lam, self.sigma = k, h, lam, sigma
        self.mean = np.zeros(h)
        self.rng = np.random.default_rng(seed)

    def command(self, state):
        noise = self.rng.normal(0.0, self.sigma, size=(self.k, self.h))
        u = np.clip(self.mean + noise, -MAX_TORQUE, MAX_TORQUE)
        th = np.full(self.k, state[0])
        thdot = np.full(self.k, state[1])
        cost = np.zeros(self.k)
        for t in range(self.h):
            ut = u[:, t]
            cost += angle_normalize(th) ** 2 + 0.1 * thdot ** 2 + 0.001 * ut ** 2
            thdot = np.clip(thdot + (3 * G / (2 * L) * np.sin(th) + 3.0 / (M * L ** 2) * ut) * DT, -8, 8)
            th = th + thdot * DT
        w = np.exp(-(cost - cost.min()) / self.lam)
        w /= w.sum()
        self.mean = w @ u
        action = float(self.mean[0])
        self.mean = np.roll(self.mean, -1)
        self.mean[-1] = self.mean[-2]
        return action


def pytorch_mppi_controller(k, h, lam, sigma, seed):
    import torch
    from pytorch_mppi import MPPI

    torch.manual_seed(seed)

    def dynamics(state, action):
        th, thdot = state[:, 0:1], state[:, 1:2]
        u = torch.clamp(action, -MAX_TORQUE, MAX_TORQUE)
        newthdot = torch.clamp(thdot + (3 * G / (2 * L) * torch.sin(th) + 3.0 / (M * L ** 2) * u) * DT, -8, 8)
        return torch.cat((th + newthdot * DT, newthdot), dim=1)

    def running_cost(state, action):
        th, thdot = state[:, 0], state[:, 1]
        th = ((th + math.pi) % (2 * math.pi)) - math.pi
        return th ** 2 + 0.1 * thdot ** 2 + 0.001 * action[:, 0] ** 2

    ctrl = MPPI(dynamics, running_cost, 2, noise_sigma=torch.eye(1, dtype=torch.float32) * sigma ** 2, num_samples=k,
                horizon=h, lambda_=lam, u_min=torch.tensor([-MAX_TORQUE], dtype=torch.float32),
                u_max=torch.tensor([MAX_TORQUE], dtype=torch.float32), device="cpu")
    return lambda state: float(ctrl.command(torch.tensor(state, dtype=torch.float32))[0])


def summary(name, returns, times):
    t = np.asarray(times)
    return {"name": name, "p50_us": float(np.percentile(t, 50)), "p99_us": float(np.percentile(t, 99)),
            "mean": float(np.mean(returns)), "std": float(np.std(returns))}


def free_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--horizon", type=int, default=30)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--sigma", type=float, default=1.0, help="exploration std of the torque, N m")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    k, h, lam, sigma = args.samples, args.horizon, args.temperature, args.sigma
    seeds = list(range(args.episodes))
    start_states = starts(seeds)
    rows = []

    print(f"Pendulum-v1, K={k}, H={h}, lambda={lam}, sigma={sigma} N m, 1 iteration per command, seeds 0-{seeds[-1]}", flush=True)
    for name, make in (("pytorch_mppi (CPU)", pytorch_mppi_controller),
                       ("numpy MPPI", lambda *a: NumpyMPPI(*a).command)):
        returns, times = [], []
        for s, start in zip(seeds, start_states):
            r, t = episode(make(k, h, lam, sigma, s), start, s, args.steps)
            returns.append(r)
            times += t
        rows.append(summary(name, returns, times))
        print(f"  {name:<28} done", flush=True)

    mpcd_bench = str(REPO / ".build" / "release" / "mpcd-bench")
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write("\n".join(",".join(str(v) for v in s) for s in start_states))
        starts_file = f.name
    for threads in (1, os.cpu_count() or 1):
        result = json.loads(subprocess.run([mpcd_bench, "episodes", "--starts", starts_file, "--steps", str(args.steps), "--samples", str(k),
                                            "--horizon", str(h), "--temperature", str(lam), "--initial-std", str(sigma / MAX_TORQUE),
                                            "--iterations", "1", "--threads", str(threads)], capture_output=True, text=True, check=True).stdout)
        rows.append({"name": f"mpcd planner, in process, {threads} thread{'s' if threads > 1 else ''}", "p50_us": result["command_us_p50"],
                     "p99_us": result["command_us_p99"], "mean": float(np.mean(result["returns"])), "std": float(np.std(result["returns"])),
                     "critical_us": result["critical_path_us_p50"], "threads": threads})
        print(f"  {rows[-1]['name']:<40} done", flush=True)
        if (os.cpu_count() or 1) == 1:
            break

    config = Path(tempfile.mkdtemp()) / "peer.toml"
    config.write_text(f'[task]\nname = "pendulum"\n[planner]\nsamples = {k}\nhorizon = {h}\niterations = 1\n'
                      f'temperature = {lam}\ninitial_std = {sigma / MAX_TORQUE}\n')
    endpoint = free_endpoint()
    daemon = subprocess.Popen([str(REPO / ".build" / "release" / "mpcd"), "--config", str(config), "--endpoint", endpoint],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=dict(os.environ, RUNTIME_DIRECTORY=str(config.parent)))
    try:
        assert "listening" in daemon.stdout.readline()
        returns, times = [], []
        for s, start in zip(seeds, start_states):
            with Controller(endpoint, timeout=5) as c:
                r, t = episode(lambda state: float(c.act(np.array(state))[0]), start, s, args.steps)
            returns.append(r)
            times += t
        rows.append(summary("mpcd end to end (Python client)", returns, times))
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
    print("  mpcd end to end               done", flush=True)

    peers, mpcd_rows, e2e = rows[:2], rows[2:-1], rows[-1]
    table = ["| controller | time per command p50 (us) | p99 (us) | return mean | std | "
             + " | ".join(f"mpcd in process, {r['threads']} thr., is faster by" for r in mpcd_rows) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(mpcd_rows)]
    for r in rows:
        speedups = [f"{r['p50_us'] / m['p50_us']:.0f}x" if r in peers else "-" for m in mpcd_rows]
        table.append(f"| {r['name']} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | {r['mean']:.1f} | {r['std']:.1f} | " + " | ".join(speedups) + " |")
    lines = "\n".join(table)
    critical = ", ".join(f"{m['threads']} thread{'s' if m['threads'] > 1 else ''} {m['critical_us']:.1f} us" for m in mpcd_rows)
    notes = (f"mpcd in process counts all the work of a command, its noise included. With the noise generated between "
             f"commands, as the daemon does after each reply, the critical path (p50) is: {critical}. End to end through the "
             f"daemon from Python (default thread count, 1), the round trip included, mpcd is "
             f"{peers[0]['p50_us'] / e2e['p50_us']:.1f}x faster than pytorch_mppi and {peers[1]['p50_us'] / e2e['p50_us']:.1f}x "
             f"faster than numpy MPPI per command (p50).")
    print()
    print(lines)
    print()
    print(notes)
    if not args.no_docs:
        write_docs(rows, lines, notes, dict(k=k, h=h, lam=lam, sigma=sigma, episodes=len(seeds)))


def write_docs(rows, table, notes, p):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    names = [r["name"] for r in rows]
    colors = ["tab:gray"] * 2 + ["tab:blue"] * (len(rows) - 3) + ["tab:cyan"]
    left.barh(names, [r["p50_us"] for r in rows], color=colors)
    left.set_xscale("log")
    left.set_xlabel("time per command, p50 (us, log scale)")
    left.invert_yaxis()
    right.barh(names, [r["mean"] for r in rows], xerr=[r["std"] for r in rows], color=colors)
    right.set_xlabel(f"return, mean and std over {p['episodes']} episodes")
    right.set_yticks([])
    right.invert_yaxis()
    fig.suptitle(f"Pendulum-v1, K={p['k']}, H={p['h']}, lambda={p['lam']}, sigma={p['sigma']}, 1 iteration per command")
    fig.tight_layout()
    fig.savefig(REPO / "docs" / "peers.png", dpi=90)
    write_block(REPO / "docs" / "benchmarks.md", "peers", f"{table}\n\n{notes}\n\n![peers](peers.png)")
    print("wrote docs/benchmarks.md and docs/peers.png")


if __name__ == "__main__":
    main()
