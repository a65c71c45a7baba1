"""Rounds of the fleet loop on Pendulum-v1, measured: record, learn, load, record again.

    python -m mpcd_client.fleet_rounds [--start policy.safetensors] [--rounds 3] [--episodes 500]
                                       [--out policy.safetensors] [--docs docs | --no-docs]

Round 0 is --start (by default the shipped policy, itself three rounds on from `mpcd train`'s:
scripts/train_networks.sh runs this module with --no-docs after distilling). Each round runs mpcd's
embedded default (the policy as the prior of Eq. 5, MPPI refining, adaptive iterations) with the current policy, records --episodes Pendulum-v1 episodes through the Gymnasium
bridge (round k: seeds 1000 + 1000 k on), and continues the policy on every round's recordings so far
(`python -m mpcd_client.learn --init`, 30 epochs from a step size of 3e-4): the planner's refined
plans go back into the network that proposes them, and the next round records with it. After each
round the policy is measured alone (0 iterations) and as the default's prior, on seeds 0-99 (the
optimum -133.3) and seeds 100-119 (-168.0), which no round records.

Writes the table into DOCS/recording.md and the plot to DOCS/fleet_rounds.png, and the last policy
to --out (about 2.5 minutes a round here).
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .docblock import write_block
from .gym import run_episodes
from .learn_results import REPO, SHIPPED, Daemon, check_mpcd, default_text, policy_alone_text, pyplot, quiet
from .optimum import optimal_returns

SEED_SETS = {"0-99": range(0, 100), "100-119": range(100, 120)}


def evaluate(mpcd, folder, policy, optima):
    """Mean return and distance to the optimum of the policy alone and as the default's prior."""
    row = {}
    for form, text in (("alone", policy_alone_text(mpcd)), ("prior", default_text(mpcd))):
        daemon = Daemon(mpcd, text.replace("embedded:pendulum_policy", str(policy)), folder)
        try:
            for name, seeds in SEED_SETS.items():
                returns, rows, _, _ = run_episodes("Pendulum-v1", len(seeds), seeds[0], daemon.endpoint, out=quiet)
                mean = float(np.mean(returns))
                row[(form, name)] = (mean, (optima[name] - mean) / abs(optima[name]), float(np.asarray(rows, float)[:, -2].mean()))
        finally:
            daemon.stop()
    return row


def record(mpcd, folder, policy, recordings, episodes, first_seed):
    text = default_text(mpcd, f'\n[recording]\ndirectory = "{recordings}"\nenabled = true\nbudget_mb = 8192\n')
    daemon = Daemon(mpcd, text.replace("embedded:pendulum_policy", str(policy)), folder)
    try:
        run_episodes("Pendulum-v1", episodes, first_seed, daemon.endpoint, out=quiet)
    finally:
        daemon.stop()


def describe(label, row):
    return "   ".join(f"{form} {name}: {row[(form, name)][0]:.1f} ({100 * row[(form, name)][1]:.1f}%)"
                       for form in ("alone", "prior") for name in SEED_SETS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mpcd", default=str(REPO / ".build" / "release" / "mpcd"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--out", help="where to keep the last round's policy")
    parser.add_argument("--start", default=str(SHIPPED), help="the policy of round 0")
    parser.add_argument("--docs", default=str(REPO / "docs"))
    parser.add_argument("--no-docs", action="store_true", help="write no table or plot (scripts/train_networks.sh)")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 20 or args.episodes < 10:
        parser.error("--rounds must be from 1 to 20 and --episodes at least 10")
    if not Path(args.start).is_file():
        parser.error(f"--start {args.start}: no such file")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        parser.error(f"--out {args.out}: no folder {Path(args.out).resolve().parent}")
    check_mpcd(parser, args.mpcd)
    optima = {name: float(np.mean(optimal_returns(list(seeds)))) for name, seeds in SEED_SETS.items()}
    # the daemon reads a network path against its configuration file's folder, a temporary one
    rows, policy = [], Path(args.start).resolve()
    with tempfile.TemporaryDirectory() as folder:
        start = time.monotonic()
        rows.append(evaluate(args.mpcd, folder, policy, optima))
        print(f"round 0 ({args.start})  {describe('start', rows[-1])}", flush=True)
        for k in range(args.rounds):
            recordings = Path(folder) / f"round-{k + 1}"
            record(args.mpcd, folder, policy, recordings, args.episodes, 1000 + 1000 * k)
            learned = Path(folder) / f"policy-{k + 1}.safetensors"
            subprocess.run([sys.executable, "-m", "mpcd_client.learn", *[str(Path(folder) / f"round-{j + 1}") for j in range(k + 1)],
                            "--init", str(policy), "--lr", "3e-4", "--epochs", "30", "--out", str(learned)],
                           check=True, stdout=subprocess.DEVNULL)
            policy = learned
            rows.append(evaluate(args.mpcd, folder, policy, optima))
            print(f"round {k + 1} ({time.monotonic() - start:.0f} s)  {describe(k + 1, rows[-1])}", flush=True)
        if args.out:
            shutil.copyfile(policy, args.out)
            print(f"wrote {args.out}")
    if not args.no_docs:
        write(Path(args.docs), args, rows, optima)


def write(out, args, rows, optima):
    lines = [f"{args.episodes} episodes a round; the optimum {optima['0-99']:.1f} on seeds 0-99 and {optima['100-119']:.1f} "
             "on seeds 100-119; mean return (distance to the optimum), and the default's mean compute per tick:", "",
             "| round | ticks learned from | alone, 0-99 | alone, 100-119 | as the default's prior, 0-99 | as the prior, 100-119 | compute (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    start = "the shipped policy" if Path(args.start).resolve() == SHIPPED.resolve() else Path(args.start).name
    for k, row in enumerate(rows):
        cells = [f"{row[(form, name)][0]:.1f} ({100 * row[(form, name)][1]:.1f}%)" for form in ("alone", "prior") for name in SEED_SETS]
        label = f"0 ({start})" if k == 0 else str(k)
        lines.append(f"| {label} | {200 * args.episodes * k} | {' | '.join(cells)} | {row[('prior', '0-99')][2]:.3f} |")
    write_block(out / "recording.md", "fleet-rounds", "\n".join(lines))
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    rounds = np.arange(len(rows))
    for form, marker in (("alone", "o"), ("prior", "s")):
        for name, style in (("0-99", "-"), ("100-119", "--")):
            label = f"{'policy alone' if form == 'alone' else 'as the default prior'}, seeds {name}"
            ax.plot(rounds, [100 * r[(form, name)][1] for r in rows], marker + style, label=label)
    ax.set(xlabel=f"round (0: {start})", ylabel="distance to the optimum (%)", xticks=rounds,
           title="Record, learn, load: Pendulum-v1 through the daemon")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fleet_rounds.png", dpi=100)
    print(f"wrote {out / 'recording.md'} and {out / 'fleet_rounds.png'}")


if __name__ == "__main__":
    main()
