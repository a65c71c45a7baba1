"""Actuators through the daemon: a slew-limited unicycle, and the pendulum's chatter.

    python -m mpcd_client.actuators [--mpcd .build/release/mpcd] [--before-mpcd PATH] [--out docs]

1. The unicycle of deploy/config/unicycle.toml (lockstep), as shipped (its distilled policy as the
   prior) and the planner alone (without the [prior]), seeds 0-9, 100 steps from a random
   start near the origin (the task's own start distribution), with and without a slew limit of
   4 per second on both actions ([safety] max_rate = [4, 4]; the planner takes the same limit
   inside its rollouts unless [planner] max_rate says otherwise). For each: the mean return (the
   task's own running cost, summed and negated), the share of replies the safety guard changed
   (the `limited` flag), and the planning time per tick.
2. Pendulum-v1 through the embedded default, seeds 100-119: the mean absolute change of the action
   over the last 100 steps of each episode (chatter at the balance), and the return.

With --before-mpcd (a build of an earlier commit, e.g. `git worktree add /tmp/before 095b9c8 &&
cd /tmp/before && swift build -c release --product mpcd`), every row is run with that binary too,
and the plot shows the pendulum's actions before and after. Writes the tables into
OUT/configuration.md's "actuators" block and OUT/actuators.png.
"""
import argparse
import math
import os
import random
import re
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np

from .amortisation import REPO, quiet, start, stop
from .client import Controller
from .docblock import write_block
from .gym import run_episodes

UNICYCLE = REPO / "deploy" / "config" / "unicycle.toml"
LIMITED_FLAG = 16
SLEW = "\n[safety]\nmax_rate = [4.0, 4.0]\n"


class Unicycle:
    """Sources/Models/Unicycle.swift's model and running cost, from a configuration's [task]."""

    def __init__(self, task):
        self.goal = np.array(task.get("goal", [4.0, 0.0]), dtype=float)
        self.obstacles = [(o["x"], o["y"], o["radius"]) for o in task.get("obstacles", [{"x": 2.0, "y": 0.0, "radius": 0.5}])]
        self.radius, self.margin = task.get("robot_radius", 0.2), task.get("safety_margin", 0.3)
        self.goal_weight, self.obstacle_weight = task.get("goal_weight", 1.0), task.get("obstacle_weight", 20.0)
        self.collision_cost = task.get("collision_cost", 1000.0)
        self.speed_weight, self.turn_weight = task.get("speed_weight", 0.01), task.get("turn_weight", 0.01)
        self.speed = (task.get("min_speed", -0.2), task.get("max_speed", 1.0))
        self.turn = task.get("max_turn_rate", 1.5)
        self.dt = task.get("dt", 0.1)

    def cost(self, state, action):
        x, y, _ = state
        v, w = action
        c = self.goal_weight * math.hypot(x - self.goal[0], y - self.goal[1]) + self.speed_weight * v * v + self.turn_weight * w * w
        for ox, oy, r in self.obstacles:
            clearance = math.hypot(x - ox, y - oy) - (r + self.radius)
            c += self.obstacle_weight * max(0.0, self.margin - clearance) ** 2 + (self.collision_cost if clearance < 0 else 0.0)
        return c

    def step(self, state, action):
        x, y, heading = state
        v, w = np.clip(action[0], *self.speed), np.clip(action[1], -self.turn, self.turn)
        return np.array([x + v * math.cos(heading) * self.dt, y + v * math.sin(heading) * self.dt, heading + w * self.dt])


def unicycle_episodes(mpcd, text, folder, seeds=range(10), steps=100):
    model = Unicycle(tomllib.loads(text)["task"])
    process, endpoint = start(mpcd, text, folder)
    returns, limited, replies, compute, changes = [], 0, 0, [], []
    try:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            state = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(-math.pi, math.pi)])
            total, previous = 0.0, None
            with Controller(endpoint, timeout=5) as c:
                for _ in range(steps):
                    action = c.act(state)
                    if previous is not None:
                        changes.append(np.abs(action - previous))
                    previous = action
                    replies += 1
                    limited += bool(c.last.flags & LIMITED_FLAG)
                    compute.append(c.last.diagnostics["compute_seconds"] * 1e3)
                    total -= model.cost(state, action)
                    state = model.step(state, action)
            returns.append(total)
    finally:
        stop(process)
    return {"mean": float(np.mean(returns)), "limited_share": limited / replies, "compute_ms": float(np.mean(compute)),
            "change": np.mean(changes, axis=0).tolist()}


def chatter(mpcd, text, folder, seeds=range(100, 120)):
    process, endpoint = start(mpcd, text, folder)
    try:
        returns, rows, _, _ = run_episodes("Pendulum-v1", len(seeds), seeds[0], endpoint, out=quiet)
    finally:
        stop(process)
    data = np.asarray(rows, dtype=float)
    # columns: episode, step, 3 observations, action, reward, iterations, compute_ms, round_trip_ms
    changes, actions = [], []
    for e in range(len(seeds)):
        a = data[data[:, 0] == e, 5]
        changes.append(float(np.mean(np.abs(np.diff(a[-100:])))))
        actions.append(a)
    return {"mean": float(np.mean(returns)), "chatter": float(np.mean(changes)), "compute_ms": float(np.mean(data[:, -2])),
            "compute_p50_ms": float(np.percentile(data[:, -2], 50)), "compute_p99_ms": float(np.percentile(data[:, -2], 99)),
            "actions": actions}


def compute_side_by_side(builds, folder, repeats):
    """The embedded default's mean compute per tick for each build, the same 20 episodes run
    `repeats` times, the builds taking turns in a shuffled order: the median of each build's means
    (one run moves by 10-15% on this machine)."""
    means = {b: [] for b in builds}
    order = random.Random(0)
    for _ in range(repeats):
        # in a shuffled order: whatever runs second in a pair was measured slower on this machine
        for b in order.sample(builds, len(builds)):
            default = __import__("subprocess").run([b, "--print-default"], check=True, capture_output=True, text=True).stdout
            means[b].append(chatter(b, default.replace('mode = "realtime"', 'mode = "lockstep"'), folder)["compute_ms"])
    return {b: float(np.median(m)) for b, m in means.items()}


def run(mpcd, folder, smoothing=False):
    base = UNICYCLE.read_text().replace('file = "../networks/', f'file = "{REPO / "deploy" / "networks"}/')
    base = base.replace('mode = "realtime"', 'mode = "lockstep"')
    default = __import__("subprocess").run([mpcd, "--print-default"], check=True, capture_output=True, text=True).stdout
    alone = re.sub(r"\[prior\]\nfile = .*\n", "", base)
    results = {}
    for key, text in [("shipped", base), ("alone", alone)]:
        results[key] = unicycle_episodes(mpcd, text, folder)
        results[key + "_slew"] = unicycle_episodes(mpcd, text + SLEW, folder)
    lockstep = default.replace('mode = "realtime"', 'mode = "lockstep"')
    results["pendulum"] = chatter(mpcd, lockstep, folder)
    if smoothing:
        # the same with the Savitzky-Golay filter on the mean
        smooth = "[planner]\nsmoothing = \"savitzky_golay\""
        results["alone_smooth"] = unicycle_episodes(mpcd, alone.replace("[planner]", smooth), folder)
        results["pendulum_smooth"] = chatter(mpcd, lockstep.replace("[planner]", smooth), folder)
    return results


VARIANTS = [("shipped", "unicycle.toml (policy prior)"), ("alone", "unicycle.toml without its prior")]


def describe(label, r):
    rows = []
    for key, name in VARIANTS:
        u, s = r[key], r[key + "_slew"]
        rows += [
            f"| {label} | {name}, no slew limit | {u['mean']:.1f} | {100 * u['limited_share']:.1f}% | {change(u)} | {u['compute_ms']:.3f} |",
            f"| {label} | {name}, max_rate = [4, 4] | {s['mean']:.1f} ({100 * (s['mean'] - u['mean']) / abs(u['mean']):+.1f}%) | "
            f"{100 * s['limited_share']:.1f}% | {change(s)} | {s['compute_ms']:.3f} |",
        ]
    if "alone_smooth" in r:
        u = r["alone_smooth"]
        rows.append(f"| {label} | {VARIANTS[1][1]}, no slew limit, smoothing = \"savitzky_golay\" | {u['mean']:.1f} | "
                    f"{100 * u['limited_share']:.1f}% | {change(u)} | {u['compute_ms']:.3f} |")
    p = r["pendulum"]
    pendulum = [f"| {label} | embedded default | {p['mean']:.1f} | {p['chatter']:.4f} | {p['compute_ms']:.3f} |"]
    if "pendulum_smooth" in r:
        p = r["pendulum_smooth"]
        pendulum.append(f"| {label} | embedded default, smoothing = \"savitzky_golay\" | {p['mean']:.1f} | {p['chatter']:.4f} | {p['compute_ms']:.3f} |")
    return rows, pendulum


def change(r):
    return " / ".join(f"{c:.3f}" for c in r["change"])


def plot(out, after, before, before_label="before"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
    for i, ax in enumerate(axes):
        if before:
            ax.plot(before["pendulum"]["actions"][i], lw=1, color="tab:red", alpha=0.8, label=before_label)
        ax.plot(after["pendulum"]["actions"][i], lw=1, color="tab:blue", label="this build")
        ax.set_title(f"Pendulum-v1 seed {100 + i}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("torque sent")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "actuators.png", dpi=90)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mpcd_client.actuators", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mpcd", default=os.environ.get("MPCD_BIN", str(REPO / ".build" / "release" / "mpcd")))
    parser.add_argument("--before-mpcd", help="an earlier build, run side by side")
    parser.add_argument("--before-label", default="before", help="what to call it in the tables")
    parser.add_argument("--out", default=str(REPO / "docs"))
    parser.add_argument("--repeats", type=int, default=5, help="with --before-mpcd: turns each build takes at the compute comparison")
    args = parser.parse_args(argv)
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as folder:
        before = run(args.before_mpcd, folder) if args.before_mpcd else None
        after = run(args.mpcd, folder, smoothing=True)
        if before:
            side_by_side = compute_side_by_side([args.before_mpcd, args.mpcd], folder, args.repeats)
    unicycle_rows, pendulum_rows = [], []
    for label, r in ([(args.before_label, before)] if before else []) + [("this build", after)]:
        u, p = describe(label, r)
        unicycle_rows += u
        pendulum_rows += p
        print("\n".join(u + p), flush=True)
    verdicts = []
    for key, name in VARIANTS:
        s, u = after[key + "_slew"], after[key]
        verdicts += [
            (f"{name}: the guard changes at most 5% of the slew-limited replies: {100 * s['limited_share']:.1f}%", s["limited_share"] <= 0.05),
            (f"{name}: the return no more than 10% below the unlimited configuration's: {s['mean']:.1f} against {u['mean']:.1f}",
             s["mean"] >= u["mean"] - 0.1 * abs(u["mean"])),
        ]
    if before:
        b, a = before["pendulum"], after["pendulum"]
        verdicts += [
            (f"the pendulum's chatter at most a third of {args.before_label}'s: {a['chatter']:.4f} against {b['chatter']:.4f}", a["chatter"] <= b["chatter"] / 3),
            (f"at a return no worse: {a['mean']:.1f} against {b['mean']:.1f}", a["mean"] >= b["mean"]),
            (f"compute per tick of the embedded default no more than 10% above {args.before_label}'s (median of {args.repeats} alternating runs' means): "
             f"{side_by_side[args.mpcd]:.4f} ms against {side_by_side[args.before_mpcd]:.4f}",
             side_by_side[args.mpcd] <= 1.1 * side_by_side[args.before_mpcd]),
        ]
    plot(out, after, before, args.before_label)
    block = ("| build | configuration | mean return, seeds 0-9 | replies the guard changed | mean abs. change of speed / turn rate per step | compute per tick (ms) |\n|---|---|---:|---:|---:|---:|\n"
             + "\n".join(unicycle_rows)
             + "\n\n| build | configuration | Pendulum-v1 return, seeds 100-119 | mean abs. action change, last 100 steps | compute per tick, mean (ms) |\n|---|---|---:|---:|---:|\n"
             + "\n".join(pendulum_rows)
             + "\n\n" + "\n".join(f"- {'met' if ok else '**not met**'}: {text}" for text, ok in verdicts)
             + "\n\n![actuators](actuators.png)")
    write_block(out / "configuration.md", "actuators", block)
    print("\n".join(f"{'met' if ok else 'NOT MET'}: {text}" for text, ok in verdicts))
    print(f"wrote {out / 'configuration.md'} (actuators block) and {out / 'actuators.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
