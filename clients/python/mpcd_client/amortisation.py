"""Amortised against iterative inference on Gymnasium Pendulum-v1, through the daemon.

    python -m mpcd_client.amortisation [--mpcd .build/release/mpcd] [--out docs]

First the distance to the optimum on seeds 0-99 (the optimum from dynamic programming with the
true model, mpcd_client.optimum): the embedded default as shipped and in its other forms, the
distilled policy alone, the policy prior with one iteration against the planner alone with four
(K=256), and deploy/config/pendulum_value.toml with and without its learned value. Then three
yardstick rows: the default at H=16 with the optimum's own value at the end of its rollouts
(mpcd_client.optimum_value: the dynamic programme's table fitted by mpcd's network, which no task
but the pendulum could have), as shipped, started from the cheaper plan without the KL, and that
with 2 iterations every tick: how far
a value that knew the optimum would take the planner, at what compute (--no-yardstick leaves them
out).

Then every row starts mpcd with its own configuration (K=256, H=32, initial_std 0.3, MPPI) and runs
20 episodes, seeds 100-119, through the Gymnasium bridge:

  (a) the planner alone at 1, 2, 4 and 8 iterations per tick;
  (b) the distilled policy alone (0 iterations: the network's action);
  (c) the policy as the planner's prior in the paper's form (it starts every tick and its KL
      enters the weights, prior_strength = 1), 1 and 2 iterations; at 1, for comparison, Eq. 5 with
      the prior as the start only (prior_strength = 0), and that started from the cheaper of the
      prior and the carried plan (prior_start = "cheaper");
  (d) the distilled amortised plan as the prior, 1 iteration;
  (e) the policy prior with adaptive iterations between 0 and 2;
  (f) a learned value at the end of the rollouts (deploy/config/pendulum_value.toml's network,
      discount 0.99) at H=16, 2 iterations, beside the planner alone at H=16 and H=32.

Then online amortisation: from an untrained policy, with adaptive iterations (0 to 2) and plans
labelled as mpcd train labels them (prior_start = "cheaper", prior_strength = 0), the daemon
distils its own ticks in the background while lockstep episodes run back to back, in blocks of the
same 20 seeds (100-119), so that every block's mean return compares directly with the rows above;
the curve of iterations per tick and return per block shows the prior taking over.

Then the learned value against the horizon: Pendulum-v1 (seeds 100-119, 2 iterations) at H = 4,
8, 16, 32 without a value and with deploy/networks/pendulum_value.safetensors, and
MountainCarContinuous-v0 (seeds 0-9) at H = 10, 25, 50 with deploy/config/mountain_car_value.toml
(the environment's own price and its value), the same without the value, and the shaped
deploy/config/mountain_car.toml.

Writes OUT/results.md (the tables) and OUT/results.png and OUT/horizons.png (the plots).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .bench import free_endpoint
from .docblock import write_block
from .gym import run_episodes
from .optimum import optimal_returns

REPO = Path(__file__).resolve().parents[3]
NETWORKS = REPO / "deploy" / "networks"
BASE = """[task]
name = "pendulum"

[planner]
likelihood = "mppi"
samples = 256
horizon = {horizon}
temperature = 0.5
initial_std = 0.3
iterations = {iterations}
{planner_extra}
{prior}
"""
ROWS = [
    ("(a) planner alone, 1 iteration", 1, "", ""),
    ("(a) planner alone, 2 iterations", 2, "", ""),
    ("(a) planner alone, 4 iterations", 4, "", ""),
    ("(a) planner alone, 8 iterations", 8, "", ""),
    ("(b) distilled policy alone", 0, "", "policy"),
    ("(c) policy prior + planner, 1 iteration", 1, "", "policy"),
    ("(c) policy prior + planner, 2 iterations", 2, "", "policy"),
    ("(c') as (c) at 1 iteration, prior_strength = 0", 1, "prior_strength = 0", "policy"),
    ("(c'') as (c'), prior_start = \"cheaper\"", 1, 'prior_strength = 0\nprior_start = "cheaper"', "policy"),
    ("(d) amortised-plan prior + planner, 1 iteration", 1, "", "plan"),
    ("(e) policy prior, adaptive 0-2 iterations", 2, "", "policy adaptive"),
    ("(f) planner alone, H=16, 2 iterations", 2, "", "", 16),
    ("(f) learned value, H=16, 2 iterations", 2, "discount = 0.99", "value", 16),
]


def config_text(iterations, planner_extra, prior, online=False, state_directory=None, horizon=32):
    lines = []
    if prior == "value":
        lines += ["[value]", f'file = "{NETWORKS / "pendulum_value.safetensors"}"']
    elif prior:
        kind = prior.split()[0]
        lines.append("[prior]")
        if online:
            lines += ["online = true", f'kind = "{kind}"', f'state_directory = "{state_directory}"']
        else:
            lines.append(f'file = "{NETWORKS / f"pendulum_{kind}.safetensors"}"')
        if "adaptive" in prior:
            lines += ["adaptive = true", "min_iterations = 0"]
    return BASE.format(iterations=iterations, planner_extra=planner_extra, prior="\n".join(lines), horizon=horizon)


def start(mpcd, text, folder):
    path = Path(folder) / f"mpcd-{time.monotonic_ns()}.toml"
    path.write_text(text)
    endpoint = free_endpoint()
    process = subprocess.Popen([mpcd, "--config", str(path), "--endpoint", endpoint], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    if "listening" not in process.stdout.readline():
        process.kill()
        raise SystemExit(f"mpcd did not start with {path}:\n{text}")
    return process, endpoint


def stop(process):
    process.terminate()
    process.wait(timeout=10)


def measure(rows):
    data = np.asarray(rows, dtype=float)
    # columns: episode, step, 3 observations, action, reward, iterations, compute_ms, round_trip_ms
    return {"iterations": float(data[:, -3].mean()), "compute_ms": float(data[:, -2].mean()),
            "compute_p99_ms": float(np.percentile(data[:, -2], 99))}


def quiet(*args, **kwargs):
    pass


def episodes(mpcd, folder, label, text, seeds):
    """One configuration's episodes on `seeds` (a range), with its distance to the optimum."""
    process, endpoint = start(mpcd, text, folder)
    try:
        returns, rows, _, _ = run_episodes("Pendulum-v1", len(seeds), seeds[0], endpoint, out=quiet)
    finally:
        stop(process)
    optima = optimal_returns(list(seeds))
    optimum = float(np.mean(optima))
    mean = float(np.mean(returns))
    row = {"label": label, "mean": mean, "std": float(np.std(returns)), "worst": float(np.min(returns)),
           "optimum": optimum, "distance": (optimum - mean) / abs(optimum),
           "seeds": list(seeds), "returns": [float(r) for r in returns], "optima": [float(o) for o in optima]} | measure(rows)
    print(f"{label:<60} return {mean:8.1f} ({100 * row['distance']:4.1f}% from the optimum)   iterations/tick "
          f"{row['iterations']:.2f}   compute {row['compute_ms']:.3f} ms (p99 {row['compute_p99_ms']:.3f})", flush=True)
    return row


def table(mpcd, folder):
    return [episodes(mpcd, folder, label, config_text(iterations, extra, prior, horizon=(horizon or [32])[0]), range(100, 120))
            for label, iterations, extra, prior, *horizon in ROWS]


def embedded_default(mpcd, **changes):
    """The embedded default's text, with `key = value` lines changed (or added to [planner])."""
    text = subprocess.run([mpcd, "--print-default"], check=True, capture_output=True, text=True).stdout
    lines = text.splitlines()
    for key, value in changes.items():
        matching = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == key]
        if matching:
            lines[matching[0]] = f"{key} = {value}"
        else:
            lines.insert(lines.index("[planner]") + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def with_value(text, path):
    """A configuration's text with `path` as its [value] network."""
    return text.replace("[server]", f'[value]\nfile = "{path}"\n\n[server]')


def optimum_table(mpcd, folder, optimum_value=None):
    """The acceptance rows on seeds 0-99, each with its distance to the optimum; with
    `optimum_value` (mpcd_client.optimum_value's network), the yardstick rows after them."""
    value = (CONFIGS / "pendulum_value.toml").read_text()
    rows = [
        ("embedded default (as shipped)", embedded_default(mpcd)),
        ("embedded default, prior_start = \"cheaper\", prior_strength = 0 (the network as a start only)",
         embedded_default(mpcd, prior_start='"cheaper"', prior_strength=0)),
        ("distilled policy alone (the embedded network)", embedded_default(mpcd, iterations=0, adaptive="false")),
        ("policy prior + 1 iteration, K=256", config_text(1, "", "policy")),
        ("planner alone, 4 iterations, K=256", config_text(4, "", "")),
        ("pendulum_value.toml (H=16, learned value)", with_horizon(value, 16)),
        ("pendulum_value.toml without its value", with_horizon(value, 16, drop_value=True)),
    ]
    if optimum_value:
        short = embedded_default(mpcd, horizon=16)
        rows += [
            ("yardstick: embedded default at H=16 with the optimum's value (fitted to the dynamic programme, not learned)",
             with_value(short, optimum_value)),
            ("yardstick: the same, prior_start = \"cheaper\", prior_strength = 0",
             with_value(embedded_default(mpcd, horizon=16, prior_start='"cheaper"', prior_strength=0), optimum_value)),
            ("yardstick: the same, 2 iterations every tick",
             with_value(embedded_default(mpcd, horizon=16, prior_start='"cheaper"', prior_strength=0, adaptive="false"),
                        optimum_value)),
        ]
    return [episodes(mpcd, folder, label, text, range(0, 100)) for label, text in rows]


def acceptance(rows):
    """Issue 14's acceptance on seeds 0-99, each point judged from the rows of `optimum_table`:
    (text, met) pairs."""
    by_label = {r["label"].split(" (")[0]: r for r in rows}
    default = by_label["embedded default"]
    alone = by_label["distilled policy alone"]
    prior_one = by_label["policy prior + 1 iteration, K=256"]
    planner_four = by_label["planner alone, 4 iterations, K=256"]
    value = by_label["pendulum_value.toml"]
    no_value = by_label["pendulum_value.toml without its value"]
    return [
        (f"the embedded default within 1.5% of the optimum at no more than 0.1 ms per tick: "
         f"{100 * default['distance']:.1f}% at {default['compute_ms']:.3f} ms",
         default["distance"] <= 0.015 and default["compute_ms"] <= 0.1),
        (f"the distilled policy alone at -139 or better: {alone['mean']:.1f}", alone["mean"] >= -139),
        (f"the policy prior with 1 iteration ahead of the planner alone with 4 (K=256): "
         f"{prior_one['mean']:.1f} against {planner_four['mean']:.1f}", prior_one["mean"] > planner_four["mean"]),
        (f"the pendulum value ahead of the same configuration without it: {value['mean']:.1f} against {no_value['mean']:.1f}",
         value["mean"] > no_value["mean"]),
    ]


def shortfall(row, count=6):
    """Where a row's distance to the optimum lies: its shortfall, the sum over the seeds it ends
    below its optimum of (optimum - return), and the share of it in the `count` seeds furthest
    below. Seeds at or above their optimum (the grid's optimum is one to grid accuracy) add none."""
    gaps = sorted(((o - r, s, r, o) for s, r, o in zip(row["seeds"], row["returns"], row["optima"])), reverse=True)
    below = [g for g in gaps if g[0] > 0]
    total = sum(g for g, *_ in below)
    worst = below[:count]
    share = sum(g for g, *_ in worst) / total if total > 0 else 0.0
    seeds = ", ".join(f"seed {s} ({r:.1f} against {o:.1f})" for _, s, r, o in worst) or "none"
    return (f"Where the {row['label'].split(' (')[0]}'s distance lies: on {len(below)} of the {len(gaps)} seeds it ends "
            f"below the optimum, {total:.0f} short in all, and the {len(worst)} seeds furthest below carry "
            f"{100 * share:.0f}% of that: {seeds}.")


def write_acceptance(rows):
    return "\n".join(f"- {'met' if met else '**not met**'}: {text}" for text, met in acceptance(rows))


def write_optimum_table(rows):
    lines = ["| configuration | mean return | distance to the optimum | worst episode | iterations per tick | compute per tick, mean (ms) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['mean']:.1f} | {100 * r['distance']:.1f}% | {r['worst']:.1f} | {r['iterations']:.2f} | {r['compute_ms']:.3f} |")
    return "\n".join(lines)


PENDULUM_HORIZONS = [4, 8, 16, 32]
MOUNTAIN_CAR_HORIZONS = [10, 25, 50]
CONFIGS = REPO / "deploy" / "config"


def with_horizon(text, horizon, drop_value=False):
    """A configuration's text at another horizon, optionally without its [value] table; network
    paths made absolute."""
    lines, skipping = [], False
    for line in text.splitlines():
        if line.startswith("["):
            skipping = drop_value and line.strip() == "[value]"
        if skipping:
            continue
        if line.startswith("horizon ="):
            line = f"horizon = {horizon}"
        if drop_value and line.startswith("discount ="):
            line = "discount = 1.0"
        lines.append(line.replace('"../networks/', f'"{NETWORKS}/'))
    return "\n".join(lines) + "\n"


def horizons(mpcd, folder):
    """Return against the horizon with and without a learned value, for both tasks."""
    curves = []
    pendulum = (CONFIGS / "pendulum_value.toml").read_text()
    car = (CONFIGS / "mountain_car_value.toml").read_text()
    shaped = (CONFIGS / "mountain_car.toml").read_text()
    for task, env, episodes, seed, hs, variants in (
        ("Pendulum-v1", "Pendulum-v1", 20, 100, PENDULUM_HORIZONS,
         [("planner alone", pendulum, True), ("with the learned value", pendulum, False)]),
        ("MountainCarContinuous-v0", "MountainCarContinuous-v0", 10, 0, MOUNTAIN_CAR_HORIZONS,
         [("environment's price, no value", car, True), ("environment's price + learned value", car, False),
          ("shaped cost (mountain_car.toml), no value", shaped, False)])):
        for label, text, drop in variants:
            points = []
            for h in hs:
                process, endpoint = start(mpcd, with_horizon(text, h, drop), folder)
                try:
                    lines = []
                    returns, rows, _, _ = run_episodes(env, episodes, seed, endpoint, out=lines.append)
                finally:
                    stop(process)
                reached = sum("terminated" in line for line in lines)
                points.append({"horizon": h, "mean": float(np.mean(returns)), "std": float(np.std(returns)), "reached": reached,
                               "episodes": episodes} | measure(rows))
                p = points[-1]
                print(f"{task} {label:<42} H={h:3d}: return {p['mean']:8.1f} +- {p['std']:5.1f}"
                      + (f", goal {reached}/{episodes}" if task.startswith("Mountain") else "") + f", compute {p['compute_ms']:.3f} ms", flush=True)
            curves.append({"task": task, "label": label, "points": points})
    return curves


def write_horizons(out, curves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, task in zip(axes, ["Pendulum-v1", "MountainCarContinuous-v0"]):
        for c in (c for c in curves if c["task"] == task):
            h = [p["horizon"] for p in c["points"]]
            ax.errorbar(h, [p["mean"] for p in c["points"]], yerr=[p["std"] for p in c["points"]], marker="o", capsize=3, label=c["label"])
        ax.set_xlabel("horizon H (steps)")
        ax.set_ylabel("mean return" + (" (seeds 100-119)" if task == "Pendulum-v1" else " (seeds 0-9)"))
        ax.set_title(task)
        ax.grid(alpha=0.3)
    axes[1].axhline(96.67, color="gray", ls=":", lw=1, label="best rl-baselines3-zoo agent (96.7)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "horizons.png", dpi=90)
    lines = ["| task | configuration | " + " | ".join(f"H={h}" for h in PENDULUM_HORIZONS) + " |", "|---|---|" + "---:|" * len(PENDULUM_HORIZONS)]
    for c in curves:
        cells = {p["horizon"]: f"{p['mean']:.1f}" + (f" ({p['reached']}/{p['episodes']} at goal)" if c["task"].startswith("Mountain") else "")
                 + f", {p['compute_ms']:.3f} ms" for p in c["points"]}
        hs = PENDULUM_HORIZONS if c["task"] == "Pendulum-v1" else MOUNTAIN_CAR_HORIZONS
        if c["task"] != "Pendulum-v1" and lines[-1].startswith("| Pendulum"):
            lines += ["", "| task | configuration | " + " | ".join(f"H={h}" for h in MOUNTAIN_CAR_HORIZONS) + " |", "|---|---|" + "---:|" * len(MOUNTAIN_CAR_HORIZONS)]
        lines.append(f"| {c['task']} | {c['label']} | " + " | ".join(cells[h] for h in hs) + " |")
    return "\n".join(lines)


def online(mpcd, folder, blocks):
    """Blocks of 20 episodes (seeds 100-119) back to back against one daemon learning online."""
    state = Path(folder) / "state"
    # The daemon's own plans are the labels here: anchored to the network (the paper-form default)
    # they could only refine an untrained network's mistakes, so the plan starts from the cheaper of
    # the proposal and the carried plan, without the KL, as mpcd train labels.
    unanchored = 'prior_strength = 0\nprior_start = "cheaper"'
    process, endpoint = start(mpcd, config_text(2, unanchored, "policy adaptive", online=True, state_directory=state), folder)
    curve = []
    try:
        start_time = time.monotonic()
        for b in range(blocks):
            returns, rows, _, _ = run_episodes("Pendulum-v1", 20, 100, endpoint, out=quiet)
            data = np.asarray(rows, dtype=float)
            per_episode = [float(data[data[:, 0] == e, -3].mean()) for e in range(20)]
            curve.append({"block": b, "seconds": time.monotonic() - start_time, "return": float(np.mean(returns)),
                          "episode_iterations": per_episode} | measure(rows))
            c = curve[-1]
            print(f"online block {b:2d} (episodes {20 * b}-{20 * b + 19}) at {c['seconds']:6.1f} s: mean return {c['return']:8.1f}, "
                  f"iterations/tick {c['iterations']:.2f}, compute {c['compute_ms']:.3f} ms", flush=True)
    finally:
        stop(process)
    return curve


def write(out, results, curve, planner_alone_2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for r in results:
        marker = "o" if r["label"].startswith("(a)") else "s"
        left.scatter(r["compute_ms"], r["mean"], marker=marker, s=50, label=r["label"])
    left.legend(fontsize=7, loc="lower right")
    left.set_xlabel("compute per tick (ms, mean)")
    left.set_ylabel("mean return, seeds 100-119")
    left.set_title("Pendulum-v1 through mpcd, K=256")
    left.grid(alpha=0.3)
    episodes = np.arange(20 * len(curve))
    right.plot(episodes, [i for c in curve for i in c["episode_iterations"]], color="tab:blue", lw=1, label="iterations per tick (episode mean)")
    right.set_xlabel("episode of online amortisation (blocks of seeds 100-119)")
    right.set_ylabel("mean iterations per tick", color="tab:blue")
    right.set_ylim(0, 2.1)
    twin = right.twinx()
    twin.plot([20 * c["block"] + 19 for c in curve], [c["return"] for c in curve], "s-", color="tab:orange", label="mean return of each 20-episode block")
    twin.axhline(planner_alone_2, color="tab:orange", ls="--", lw=1, label="planner alone, 2 iterations")
    twin.set_ylabel("mean return", color="tab:orange")
    right.set_title("online amortisation from an untrained policy")
    lines = right.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    right.legend(lines, [l.get_label() for l in lines], fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=90)

    n = len(curve)
    lines = ["| configuration | mean return | distance to the optimum | std | iterations per tick | compute per tick, mean (ms) | p99 (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['mean']:.1f} | {100 * r['distance']:.1f}% | {r['std']:.1f} | {r['iterations']:.2f} | "
                     f"{r['compute_ms']:.3f} | {r['compute_p99_ms']:.3f} |")
    blocks = "; ".join(f"{c['iterations']:.2f} iterations per tick and {c['return']:.1f}" for c in curve)
    summary = (f"Online amortisation, {n} blocks of the 20 seeds back to back ({curve[-1]['seconds']:.0f} s), from an "
               f"untrained policy: {blocks} (planner alone at 2 iterations on the same seeds: {planner_alone_2:.1f}).")
    return "\n".join(lines), summary


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mpcd_client.amortisation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mpcd", default=os.environ.get("MPCD_BIN", str(REPO / ".build" / "release" / "mpcd")))
    parser.add_argument("--out", default=str(REPO / "docs"))
    parser.add_argument("--online-blocks", type=int, default=5, help="blocks of 20 online episodes")
    parser.add_argument("--no-yardstick", action="store_true",
                        help="leave out the rows with the optimum's value (they need PyTorch and about 2 minutes)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as folder:
        yardstick = None
        if not args.no_yardstick:
            from .optimum_value import optimum_value_network

            yardstick = str(Path(folder) / "optimum_value.safetensors")
            rms, largest = optimum_value_network(yardstick)
            print(f"the optimum's value fitted: rms error {rms:.2f}, largest {largest:.2f}", flush=True)
        headline = optimum_table(args.mpcd, folder, yardstick)
        results = table(args.mpcd, folder)
        curve = online(args.mpcd, folder, args.online_blocks)
        value_curves = horizons(args.mpcd, folder)
    planner_alone_2 = next(r["mean"] for r in results if r["label"] == "(a) planner alone, 2 iterations")
    rows, summary = write(out, results, curve, planner_alone_2)
    summary += ("\n\nReturn against the horizon, with and without a learned value (mean return, and compute per tick, "
                "mean):\n\n" + write_horizons(out, value_curves) + "\n\n![horizons](horizons.png)")
    optimum_100 = results[0]["optimum"]
    write_block(out / "results.md", "results",
                f"Pendulum-v1, seeds 0-99 (optimum {headline[0]['optimum']:.1f}):\n\n{write_optimum_table(headline)}\n\n"
                f"What issue 14 asks of these rows, judged by the script:\n\n{write_acceptance(headline)}\n\n"
                f"{shortfall(headline[0])}\n\n"
                f"Seeds 100-119 (optimum {optimum_100:.1f}), K=256:\n\n{rows}\n\n{summary}\n\n![results](results.png)")
    print(f"wrote {out / 'results.md'} and {out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
