#!/usr/bin/env python3
"""mpcd's MuJoCo rollouts against the `mujoco` Python package's own multithreaded `rollout` module,
side by side in one run, on the shipped Gymnasium configurations (deploy/config/mujoco). Writes a
table and docs/mujoco_rollouts.png into docs/benchmarks.md.

    .venv/bin/python benchmarks/mujoco_rollouts.py [--repeats 100] [--no-docs]     (part of `make bench`)

For each model, K and thread count (1 and 2), with H control steps of frame_skip physics steps:
- mpcd iteration: one planner iteration as the planner times it (`mpcd-bench planner --config ...
  --json`, "iteration_us_p50"): the K x H rollouts, their cost and the update; the noise is drawn
  between ticks, as the daemon does;
- mpcd plan: the whole plan() call of one iteration ("prepared_us_p50"): the iteration, the warm
  start, and the rollout of the refined mean sequence that prices it (a diagnostic, and what
  `never_worse` compares);
- mujoco.rollout: the same K x H x frame_skip physics steps from the same start state under controls
  drawn as the planner's first iteration draws them (N(centre, initial_std x half range), clipped;
  each held for frame_skip steps), nthread = the thread count (0, the caller alone, for
  1 thread), its outputs preallocated; p50 of `repeats` calls;
- the floor: K x H x frame_skip x (one mj_step's time) / threads, the step timed in a loop with the
  library mpcd links (Debian's libmujoco 2.2.2) by `mpcd-bench physics --threads T`: T threads
  stepping at once under the same controls, each its own simulation state, so the step's time is the one T busy cores
  give (on this VM one step takes longer while the other core steps too); the one-thread step
  is printed beside it.
  The `mujoco` package is 4.0: its own step time is shown too, as the two libraries differ.
- mpcd step by step: the planner iteration rolling all lanes one step at a time, each lane stored
  to floats and loaded back every step (`--step-by-step`, how mpcd rolled MuJoCo out before).
"""
import argparse
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "clients" / "python"))
from mpcd_client.docblock import write_block  # noqa: E402

BENCH = REPO / ".build" / "release" / "mpcd-bench"
CONFIGS = REPO / "deploy" / "config" / "mujoco"
# (configuration, horizon H, sample counts K)
CASES = [("half_cheetah", 20, [64, 256]), ("inverted_double_pendulum", 20, [64, 256])]


def mpcd_cells(config, samples, horizon, repeats, *extra):
    out = subprocess.run([str(BENCH), "planner", "--config", str(config), "--samples", ",".join(map(str, samples)), "--horizons", str(horizon),
                          "--threads", "1,2", "--repeats", str(repeats), "--json", *extra], capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def mpcd_step(config, horizon, threads=1):
    out = subprocess.run([str(BENCH), "physics", "--config", str(config), "--horizon", str(horizon), "--rollouts", "1000", "--threads", str(threads),
                          "--std", "planner"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def task_table(config):
    return tomllib.loads(config.read_text())["task"]


def model_file(config):
    return config.parent / task_table(config)["model"]


def frame_skip(config):
    return task_table(config).get("frame_skip", 1)


def planner_controls(config, model, rng, shape):
    """Controls drawn as the planner's first iteration draws them: N(centre, initial_std x half range),
    clipped to the range. The physics' cost depends on the controls (a cheetah flailing under uniform
    random torques makes more contacts than one under the planner's samples), so every column of
    the table steps the same distribution."""
    std = tomllib.loads(config.read_text()).get("planner", {}).get("initial_std", 0.5)
    low, high = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    centre, half = (low + high) / 2, (high - low) / 2
    return np.clip(centre + std * half * rng.standard_normal((*shape, model.nu)), low, high)


def python_rollouts(config, samples, horizon, threads, repeats):
    """p50 seconds of one mujoco.rollout call of `samples` rollouts of horizon x frame_skip steps."""
    import mujoco
    from mujoco import rollout

    model = mujoco.MjModel.from_xml_path(str(model_file(config)))
    skip = frame_skip(config)
    data = mujoco.MjData(model)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    start = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, start, spec)
    rng = np.random.default_rng(0)
    controls = planner_controls(config, model, rng, (samples, horizon)).repeat(skip, axis=1)
    steps = horizon * skip
    state = np.empty((samples, steps, start.size))
    sensors = np.empty((samples, steps, model.nsensordata))
    datas = [mujoco.MjData(model) for _ in range(max(1, threads))]
    times = []
    with rollout.Rollout(nthread=threads if threads > 1 else 0) as runner:
        for i in range(repeats + max(3, repeats // 10)):
            begin = time.perf_counter()
            runner.rollout(model, datas, np.tile(start, (samples, 1)), controls, state=state, sensordata=sensors)
            if i >= max(3, repeats // 10):
                times.append(time.perf_counter() - begin)
    return float(np.percentile(times, 50))


def python_step(config, steps=20000):
    """Mean seconds of one mj_step in the `mujoco` package (one rollout of `steps`, the caller alone)."""
    import mujoco
    from mujoco import rollout

    model = mujoco.MjModel.from_xml_path(str(model_file(config)))
    data = mujoco.MjData(model)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    start = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, start, spec)
    rng = np.random.default_rng(1)
    controls = planner_controls(config, model, rng, (1, steps))
    best = []
    for _ in range(5):
        begin = time.perf_counter()
        rollout.rollout(model, data, start[None], controls)
        best.append(time.perf_counter() - begin)
    return float(np.median(best)) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per cell")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    rows = []
    for name, horizon, samples in CASES:
        config = CONFIGS / f"{name}.toml"
        skip = frame_skip(config)
        print(f"{name}: H={horizon}, frame_skip={skip}, K={samples}", file=sys.stderr, flush=True)
        cells = mpcd_cells(config, samples, horizon, args.repeats)
        before = {(c["samples"], c["threads"]): c for c in mpcd_cells(config, samples, horizon, args.repeats, "--step-by-step")}
        steps = {t: mpcd_step(config, horizon, t)["step_us_mean"] for t in sorted({c["threads"] for c in cells})}
        step_python = python_step(config) * 1e6
        for cell in cells:
            k, threads = cell["samples"], cell["threads"]
            theirs = python_rollouts(config, k, horizon, threads, args.repeats) * 1e3
            ours, plan = cell["iteration_us_p50"] / 1e3, cell["prepared_us_p50"] / 1e3
            floor = k * horizon * skip * steps[threads] / threads / 1e3
            rows.append({"model": name, "K": k, "H": horizon, "frame_skip": skip, "threads": threads, "mpcd_ms": ours, "plan_ms": plan, "mujoco_ms": theirs,
                         "step_by_step_ms": before[(k, threads)]["iteration_us_p50"] / 1e3,
                         "floor_ms": floor, "step_us": steps[threads], "step_one_thread_us": steps[1] if 1 in steps else float("nan"),
                         "step_python_us": step_python})
            print(f"  K={k} threads={threads}: mpcd iteration {ours:.2f} ms (plan {plan:.2f}), mujoco.rollout {theirs:.2f} ms, floor {floor:.2f} ms",
                  file=sys.stderr, flush=True)
    lines = ["| model | K | H x frame_skip | threads | mpcd iteration p50 (ms) | mujoco.rollout p50 (ms) | mpcd / mujoco.rollout | "
             "floor (ms) | mpcd / floor | mpcd plan, 1 iteration (ms) | mpcd step by step (ms) | one mj_step with T / 1 busy (us) | mj_step 4.0 (us) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['K']} | {r['H']} x {r['frame_skip']} | {r['threads']} | {r['mpcd_ms']:.2f} | {r['mujoco_ms']:.2f} | "
                     f"{r['mpcd_ms'] / r['mujoco_ms']:.2f} | {r['floor_ms']:.2f} | {r['mpcd_ms'] / r['floor_ms']:.2f} | {r['plan_ms']:.2f} | "
                     f"{r['step_by_step_ms']:.2f} | {r['step_us']:.2f} / {r['step_one_thread_us']:.2f} | {r['step_python_us']:.2f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_docs:
        write_docs(rows, table, args)


def write_docs(rows, table, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows}, key=[c[0] for c in CASES].index)
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4))
    for ax, model in zip(np.atleast_1d(axes), models):
        cells = [r for r in rows if r["model"] == model]
        labels = [f"K={r['K']}\n{r['threads']} thr" for r in cells]
        x = np.arange(len(cells))
        ax.bar(x - 0.27, [r["mpcd_ms"] for r in cells], 0.27, label="mpcd planner iteration")
        ax.bar(x, [r["mujoco_ms"] for r in cells], 0.27, label="mujoco.rollout 4.0")
        ax.bar(x + 0.27, [r["floor_ms"] for r in cells], 0.27, label="floor: K H skip x mj_step / threads")
        ax.set_xticks(x, labels)
        ax.set_ylabel("ms per iteration (p50)")
        ax.set_title(f"{model} (H={cells[0]['H']}, frame_skip={cells[0]['frame_skip']})")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(REPO / "docs" / "mujoco_rollouts.png", dpi=90)
    write_block(REPO / "docs" / "benchmarks.md", "mujoco",
                f"`.venv/bin/python benchmarks/mujoco_rollouts.py` ({args.repeats} timed calls per cell, {time.strftime('%Y-%m-%d')}):\n\n"
                f"{table}\n\n![MuJoCo rollouts](mujoco_rollouts.png)", heading="## MuJoCo rollouts against mujoco.rollout")
    print("wrote docs/benchmarks.md and docs/mujoco_rollouts.png")


if __name__ == "__main__":
    main()
