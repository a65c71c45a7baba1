"""Training from a fleet's recordings, measured (docs/recording.md, "Training from recordings").

    python -m mpcd_client.learn_results [--mpcd .build/release/mpcd] [--episodes 500] [--out docs]

1. The "fleet": mpcd on its embedded default (the shipped policy as the prior, MPPI refining) with
   recording on, driving Gymnasium Pendulum-v1 for --episodes episodes from seeds 1000 on.
2. Training with PyTorch from those recordings: a policy from new weights on one process, the same
   under `torchrun --nproc_per_node 2` (DistributedDataParallel, gloo), and the shipped policy
   continued (--init) under torchrun. The two runs from new weights are compared epoch by epoch.
3. Each network loaded with `mpcctl policy load` into a running daemon, on seeds 100-119 (not seen
   in training): the policy alone (0 iterations) and as the embedded default's prior, against the
   shipped policy in the same daemon, and the optimum from dynamic programming. A fourth network
   learns only from the ticks whose plan ran an iteration (`--refined-only`).

Writes the table into OUT/recording.md and the plot to OUT/learn.png (about 10 minutes here).
"""
import argparse
import json
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
SHIPPED = REPO / "deploy" / "networks" / "pendulum_policy.safetensors"
SEEDS = range(100, 120)
EPOCHS, TUNING_EPOCHS, BATCH = 60, 30, 256


def quiet(*args, **kwargs):
    pass


def pyplot():
    """matplotlib's pyplot drawing to files, or None (and a line saying so) where it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: no plot", file=sys.stderr)
        return None
    return plt


class Daemon:
    def __init__(self, mpcd, text, folder):
        self.folder = Path(folder)
        path = self.folder / f"mpcd-{time.monotonic_ns()}.toml"
        path.write_text(text)
        self.endpoint = free_endpoint()
        self.env = {**os.environ, "RUNTIME_DIRECTORY": str(self.folder / f"run-{time.monotonic_ns()}")}
        self.mpcctl_path = Path(mpcd).parent / "mpcctl"
        self.process = subprocess.Popen([mpcd, "--config", str(path), "--endpoint", self.endpoint], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, env=self.env)
        if "listening" not in self.process.stdout.readline():
            self.process.kill()
            raise SystemExit(f"mpcd did not start with {path}:\n{text}")

    def mpcctl(self, *args):
        result = subprocess.run([str(self.mpcctl_path), *args], capture_output=True, text=True, env=self.env, timeout=60)
        if result.returncode != 0:
            raise SystemExit(f"mpcctl {' '.join(args)}: {result.stderr}")
        return result.stdout

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def check_mpcd(parser, mpcd):
    """Refuses an --mpcd that is not an executable file, before any work (mpcctl must sit beside it)."""
    path = Path(mpcd)
    if not (path.is_file() and os.access(path, os.X_OK)) or not (path.parent / "mpcctl").is_file():
        parser.error(f"--mpcd {mpcd}: not an mpcd binary with mpcctl beside it (build with `swift build -c release`)")


def default_text(mpcd, extra=""):
    return subprocess.run([mpcd, "--print-default"], check=True, capture_output=True, text=True).stdout + extra


def policy_alone_text(mpcd):
    """The embedded default with 0 iterations: the network's action is the action."""
    lines = default_text(mpcd).splitlines()
    lines = [line for line in lines if not line.startswith(("adaptive", "min_iterations"))]
    return "\n".join("iterations = 0" if line.startswith("iterations =") else line for line in lines) + "\n"


def record(mpcd, folder, episodes):
    recordings = Path(folder) / "recordings"
    daemon = Daemon(mpcd, default_text(mpcd, f'\n[recording]\ndirectory = "{recordings}"\nenabled = true\nbudget_mb = 4096\n'), folder)
    try:
        start = time.monotonic()
        for first in range(1000, 1000 + episodes, 50):
            run_episodes("Pendulum-v1", min(50, 1000 + episodes - first), first, daemon.endpoint, out=quiet)
            print(f"recording: {first + min(50, 1000 + episodes - first) - 1000}/{episodes} episodes "
                  f"({time.monotonic() - start:.0f} s)", flush=True)
        # the writer empties its queue every 0.2 s: wait until the count stops moving
        status, previous = None, None
        while status is None or status["written"] != previous:
            previous = status["written"] if status else None
            time.sleep(0.5)
            status = json.loads(daemon.mpcctl("status", "--json"))["recording"]
    finally:
        daemon.stop()
    print(f"recorded {status['written']} ticks, {status['dropped']} dropped, {status['files']} file(s)", flush=True)
    return recordings, status


def learn(recordings, out, summary, processes, *extra, epochs=EPOCHS):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] \
        if processes > 1 else [sys.executable]
    command = launcher + ["-m", "mpcd_client.learn", str(recordings), "--out", str(out), "--summary", str(summary),
                          "--epochs", str(epochs), "--batch", str(BATCH), *map(str, extra)]
    print("$", " ".join(command[1:] if processes == 1 else ["torchrun"] + command[3:]), flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "clients" / "python")}
    subprocess.run(command, check=True, env=env)
    return json.loads(Path(summary).read_text())


def evaluate(mpcd, folder, text, networks):
    """Mean return on SEEDS of one daemon, first with its own prior, then after each policy load."""
    daemon = Daemon(mpcd, text, folder)
    results = {}
    try:
        for label, network in networks:
            if network:
                daemon.mpcctl("policy", "load", str(network))
            returns, rows, _, _ = run_episodes("Pendulum-v1", len(SEEDS), SEEDS[0], daemon.endpoint, out=quiet)
            data = np.asarray(rows, dtype=float)
            results[label] = {"returns": list(map(float, returns)), "mean": float(np.mean(returns)),
                              "compute_ms": float(data[:, -2].mean()), "iterations": float(data[:, -3].mean())}
            print(f"  {label:<44} {results[label]['mean']:8.1f}   {results[label]['iterations']:.2f} iterations/tick", flush=True)
    finally:
        daemon.stop()
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mpcd", default=str(REPO / ".build" / "release" / "mpcd"))
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args(argv)
    if args.episodes < 10:
        parser.error(f"--episodes must be at least 10, got {args.episodes}")
    check_mpcd(parser, args.mpcd)
    with tempfile.TemporaryDirectory() as folder:
        recordings, status = record(args.mpcd, folder, args.episodes)
        nets = Path(folder)
        single = learn(recordings, nets / "single.safetensors", nets / "single.json", 1)
        ddp = learn(recordings, nets / "ddp.safetensors", nets / "ddp.json", 2)
        refined = learn(recordings, nets / "refined.safetensors", nets / "refined.json", 2, "--refined-only")
        tuned_single = learn(recordings, nets / "tuned1.safetensors", nets / "tuned1.json", 1, "--init", SHIPPED, "--lr", "3e-4",
                             epochs=TUNING_EPOCHS)
        tuned = learn(recordings, nets / "tuned.safetensors", nets / "tuned.json", 2, "--init", SHIPPED, "--lr", "3e-4", epochs=TUNING_EPOCHS)
        candidates = [("shipped policy", None), ("new weights, torchrun x2", nets / "ddp.safetensors"),
                      ("new weights, refined ticks only, torchrun x2", nets / "refined.safetensors"),
                      ("shipped policy continued, torchrun x2", nets / "tuned.safetensors")]
        print("Pendulum-v1 seeds 100-119, the policy alone:", flush=True)
        alone = evaluate(args.mpcd, folder, policy_alone_text(args.mpcd).replace("embedded:pendulum_policy", str(SHIPPED)), candidates)
        print("Pendulum-v1 seeds 100-119, the embedded default with the policy as its prior:", flush=True)
        prior = evaluate(args.mpcd, folder, default_text(args.mpcd), candidates)
    optimum = np.asarray(optimal_returns(list(SEEDS)), dtype=float)
    write(Path(args.out), args, status, [("new weights", single, ddp), ("shipped policy continued", tuned_single, tuned)],
          alone, prior, optimum, refined)


def write(out, args, status, runs, alone, prior, optimum, refined):
    lines = [
        f"Recorded: {args.episodes} Pendulum-v1 episodes (seeds 1000-{999 + args.episodes}) through the embedded default, "
        f"{status['written']} ticks, {status['dropped']} dropped. Trained with Adam on a cosine step size, batch {BATCH}: "
        f"new weights {EPOCHS} epochs from 3e-3, the shipped policy continued (`--init`) {TUNING_EPOCHS} epochs from 3e-4; "
        f"with `--refined-only`, the {refined['rows']} ticks whose plan ran an iteration.",
        "",
        "| training | ticks | 1 process: s, last loss | torchrun x2: s, last loss | last loss, relative difference | largest over the epochs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, one, two in runs:
        gaps = [abs(a - b) / abs(a) for a, b in zip(one["losses"], two["losses"])]
        lines.append(f"| {label} | {one['rows']} | {one['seconds']:.0f}, {one['losses'][-1]:.6f} | {two['seconds']:.0f}, "
                     f"{two['losses'][-1]:.6f} | {gaps[-1]:.1e} | {max(gaps):.1e} |")
    mean_optimum = float(optimum.mean())
    lines += [
        "",
        f"Seeds 100-119 (the optimum {mean_optimum:.1f}), each network loaded with `mpcctl policy load` into the running daemon; "
        "against the shipped policy, seed by seed (better / worse seeds, mean difference):",
        "",
        "| network | policy alone | distance to the optimum | vs shipped | as the default's prior | distance to the optimum | vs shipped | iterations/tick |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def versus(results, label):
        mine, shipped = np.asarray(results[label]["returns"]), np.asarray(results["shipped policy"]["returns"])
        if label == "shipped policy":
            return "-"
        d = mine - shipped
        return f"{int((d > 1e-6).sum())} / {int((d < -1e-6).sum())}, {d.mean():+.1f}"

    for label in alone:
        a, p = alone[label], prior[label]
        lines.append(f"| {label} | {a['mean']:.1f} | {100 * (mean_optimum - a['mean']) / abs(mean_optimum):.1f}% | {versus(alone, label)} | "
                     f"{p['mean']:.1f} | {100 * (mean_optimum - p['mean']) / abs(mean_optimum):.1f}% | {versus(prior, label)} | "
                     f"{p['iterations']:.2f} |")
    write_block(out / "recording.md", "learn-results", "\n".join(lines))
    plt = pyplot()
    if plt is None:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for (label, one, two), colour in zip(runs, ("C0", "C2")):
        epochs = np.arange(1, len(one["losses"]) + 1)
        left.plot(epochs, one["losses"], "o-", color=colour, label=f"{label}, 1 process", markersize=6, alpha=0.4)
        left.plot(epochs, two["losses"], "x--", color=colour, label=f"{label}, torchrun x2 (DDP)", markersize=5)
    left.set(yscale="log", xlabel="epoch", ylabel="KL(refined plan || policy), mean per tick", title="Training from recordings")
    left.legend()
    labels = list(alone)
    x = np.arange(len(labels))
    for offset, results, name in ((-0.2, alone, "policy alone"), (0.2, prior, "as the default's prior")):
        right.bar(x + offset, [100 * (mean_optimum - results[k]["mean"]) / abs(mean_optimum) for k in labels], 0.4, label=name)
    right.set_xticks(x, [k.replace(", ", "\n") for k in labels], fontsize=8)
    right.set(ylabel="distance to the optimum (%), lower is better", title="Pendulum-v1 seeds 100-119, through the daemon")
    right.legend()
    fig.tight_layout()
    fig.savefig(out / "learn.png", dpi=100)
    print(f"wrote {out / 'recording.md'} and {out / 'learn.png'}")


if __name__ == "__main__":
    main()
