#!/usr/bin/env python3
"""mpcd's MuJoCo rollouts against the `mujoco` Python package's own multithreaded `rollout` module,
side by side in one run, on the shipped Gymnasium configurations (deploy/config/mujoco). Writes a
table and docs/mujoco_rollouts.png into docs/benchmarks.md.

    .venv/bin/python benchmarks/mujoco_rollouts.py [--rounds 8] [--repeats 10] [--no-docs]     (part of `make bench`)

The run is in rounds. In each, every cell's columns below are timed back to back (`--repeats`
timed calls each after 3 untimed ones, 4 for mpcd's paced process, whose first call only gives
the first sequences to step), in an order that reverses from one round to the next, and
the package's step time once per model: this VM's speed drifts by tens of percent over minutes, so
columns timed minutes apart can differ by more than the code does. The ratios are taken call by
call: mpcd's iteration, its floor and mujoco.rollout are timed in turn, each of mpcd's calls paced
by this script (`mpcd-bench planner --paced`), in orders that alternate (each half of the pairs
one way, for an even --repeats), and a round's ratio is the median of its pairs'. Every p50 is the
same nearest rank (the lower middle of an even count). The table gives each ratio's median over the
rounds (numpy's: the mean of the middle two of 8) and its range without the lowest and highest
round, and each time column the median of the rounds' p50s (so a ratio is not the quotient of the
two time columns beside it). A mark is met in a cell when that whole range is at or under it, not met when the
whole range is over it, and not resolved when the range straddles it.

For each model, K and thread count (1 and 2), with H control steps of frame_skip physics steps:
- mpcd iteration: one planner iteration as the planner times it (`mpcd-bench planner --config ...
  --json`, "iteration_us_p50"): the K x H rollouts, their cost and the update; the noise is drawn
  between ticks, as the daemon does;
- mpcd plan: the whole plan() call of one iteration ("prepared_us_p50"): the iteration, the warm
  start, and the rollout of the refined mean sequence that prices it (a diagnostic, and what
  `never_worse` compares);
- mujoco.rollout: the same K x H x frame_skip physics steps: the action sequences mpcd's last
  iteration rolled out (`--controls-out`, each action held for frame_skip steps), from the state
  mpcd plans from (the task's start distribution, drawn with a fixed seed), nthread = the thread
  count (0, the caller alone, for 1 thread), its outputs preallocated; p50 of `repeats` calls,
  each next to one of mpcd's;
- the floor: the same sequences from the same state as bare mj_step calls with the library mpcd
  loads (libmujoco 2.2.2: MuJoCo's AVX build beside the binaries where `make` put it, else Debian's;
  the table's heading names it), T threads stepping at once, each its own simulation state and
  an equal share of the K rollouts (`mpcd-bench planner --floor`): K x H x frame_skip x (one
  mj_step's time when T cores step) / T. It is timed in the same process as the iteration, before
  and after it in turn, and "mpcd / floor" is the median of those pairs' ratios in a round; the
  step time beside it is the floor's p50 x T / (K x H x frame_skip), with T busy cores and with one
  (the one-thread cell of the same K and round). The issue's formula read strictly, with the step
  time of one busy core, is the last ratio column: mpcd's iteration against K x H x frame_skip x
  that one-core step / T, within each round (not paired call by call: the two cells are timed
  seconds apart).
  The `mujoco` package is 4.0: its own step time is shown too, as the two libraries differ; the
  comparison with mujoco.rollout is of the two whole stacks, library included, and the floor is
  the like-for-like mark for mpcd's own code. The step column of the libraries times one mj_step
  of 2.2.2 as mpcd loads it, of Debian's 2.2.2 build (`mpcd-bench physics` with the loader pointed
  at Debian's library; the same as the first where mpcd loads Debian's) and of the package's 4.0,
  each on controls drawn around the centre of the range from the model's initial state, not on
  the planner's sequences: a guide to the libraries, no more.
- mpcd step by step: the planner iteration rolling all lanes one step at a time, each lane stored
  to floats and loaded back every step (`--step-by-step`, how mpcd rolled MuJoCo out before).
"""
import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "clients" / "python"))
from mpcd_client.docblock import write_block  # noqa: E402
from mpcd_client.mujoco_results import commit  # noqa: E402

BENCH = REPO / ".build" / "release" / "mpcd-bench"
CONFIGS = REPO / "deploy" / "config" / "mujoco"
# (configuration, horizon H, sample counts K)
CASES = [("half_cheetah", 20, [64, 256]), ("inverted_double_pendulum", 20, [64, 256])]
THREADS = [1, 2]
# untimed calls before each round's timed ones: the first calls pay for caches and the warm start
WARM_UP = 3
# longest wait for one paced call of mpcd-bench (a K=256 iteration and its floor take well under 1 s)
LINE_TIMEOUT = 300


def mpcd_cells(config, samples, horizon, repeats, *extra, threads=THREADS):
    out = subprocess.run([str(BENCH), "planner", "--config", str(config), "--samples", ",".join(map(str, samples)), "--horizons", str(horizon),
                          "--threads", ",".join(map(str, threads)), "--repeats", str(repeats), "--warm-up", str(WARM_UP), "--json", *extra],
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def task_table(config):
    return tomllib.loads(config.read_text())["task"]


def model_file(config):
    return config.parent / task_table(config)["model"]


def frame_skip(config):
    return task_table(config).get("frame_skip", 1)


def planner_controls(config, model, rng, shape):
    """Controls drawn as the planner's first iteration draws them: N(centre, initial_std x half range),
    clipped to the range: what 4.0's step column times (the table's other columns step the
    planner's own sequences; a step's cost depends on what the model is made to do)."""
    std = tomllib.loads(config.read_text()).get("planner", {}).get("initial_std", 0.5)
    low, high = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    centre, half = (low + high) / 2, (high - low) / 2
    return np.clip(centre + std * half * rng.standard_normal((*shape, model.nu)), low, high)


class PythonRollouts:
    """mujoco.rollout on one model, paired call by call with mpcd's iterations: each call steps
    the K x H x frame_skip physics steps of the sequences mpcd's last iteration rolled out, from
    the start state mpcd plans from, nthread = the thread count (0, the caller alone, for 1
    thread), outputs preallocated."""

    def __init__(self, config, horizon):
        import mujoco

        self.mujoco = mujoco
        self.model = mujoco.MjModel.from_xml_path(str(model_file(config)))
        self.config, self.horizon, self.skip = config, horizon, frame_skip(config)

    def full_state(self, start):
        """MuJoCo's full physics state for mpcd's state vector (qpos, qvel, act)."""
        m, mujoco = self.model, self.mujoco
        data = mujoco.MjData(m)
        data.qpos[:] = start[:m.nq]
        data.qvel[:] = start[m.nq:m.nq + m.nv]
        data.act[:] = start[m.nq + m.nv:m.nq + m.nv + m.na]
        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        state = np.empty(mujoco.mj_stateSize(m, spec))
        mujoco.mj_getState(m, data, state, spec)
        return state

    def paired_with(self, mpcd, samples, threads, repeats):
        """`repeats` calls of `samples` rollouts, each paired with one timed call of mpcd's, the
        two back to back in an order that alternates (balanced for an even `repeats`), after
        WARM_UP untimed calls of each: the p50 seconds of these calls and the median of the pairs'
        mpcd / mujoco.rollout ratios."""
        from mujoco import rollout

        steps = self.horizon * self.skip
        initial = np.tile(self.full_state(mpcd.start), (samples, 1))
        state = np.empty((samples, steps, initial.shape[1]))
        sensors = np.empty((samples, steps, self.model.nsensordata))
        datas = [self.mujoco.MjData(self.model) for _ in range(max(1, threads))]
        times, ratios = [], []
        with rollout.Rollout(nthread=threads if threads > 1 else 0) as runner:
            def once(controls):
                begin = time.perf_counter()
                runner.rollout(self.model, datas, initial, controls, state=state, sensordata=sensors)
                return time.perf_counter() - begin

            ours = mpcd.call()  # untimed: the first sequences to step
            for i in range(WARM_UP + repeats):
                controls = mpcd.controls(samples, self.horizon, self.model.nu).repeat(self.skip, axis=1)
                if (i - WARM_UP) % 2 == 0:
                    theirs = once(controls)
                    ours = mpcd.call()
                else:
                    ours = mpcd.call()
                    theirs = once(controls)
                if i >= WARM_UP:
                    times.append(theirs)
                    ratios.append(ours["iteration_us"] / 1e6 / theirs)
        # the same p50 as mpcd-bench's (nearest rank, the lower middle of an even count)
        return float(np.percentile(times, 50, method="lower")), float(np.percentile(ratios, 50, method="lower"))


class PacedMpcd:
    """An `mpcd-bench planner --paced` process for one cell: `start` is the state it plans from,
    each `call()` runs one planner iteration (and its floor) and returns its times, `controls()`
    the sequences that iteration rolled out; `finish()` gives the cell's summary."""

    def __init__(self, config, k, horizon, threads, repeats, folder):
        self.controls_file = Path(folder) / "controls.f32"
        # stderr to a file, not a pipe nobody reads while it runs
        self.errors = open(Path(folder) / "stderr.txt", "w+")
        self.process = subprocess.Popen([str(BENCH), "planner", "--config", str(config), "--samples", str(k), "--horizons", str(horizon),
                                         "--threads", str(threads), "--repeats", str(repeats), "--warm-up", str(WARM_UP + 1), "--json", "--floor",
                                         "--paced", "--controls-out", str(self.controls_file)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, text=True)
        self.start = np.array(self.line()["start"])

    def line(self):
        # mpcd-bench answers each line with one (it waits for the next, so nothing is left buffered)
        if not select.select([self.process.stdout], [], [], LINE_TIMEOUT)[0]:
            self.process.kill()
            raise RuntimeError(f"mpcd-bench gave no answer in {LINE_TIMEOUT} s")
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.errors.seek(0)
            raise RuntimeError(f"mpcd-bench ended early (exit {self.process.returncode}): {self.errors.read().strip()}")
        return json.loads(line)

    def call(self):
        try:
            self.process.stdin.write("\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it has ended: line() says why
        return self.line()

    def controls(self, samples, horizon, nu):
        return np.fromfile(self.controls_file, dtype=np.float32).astype(np.float64).reshape(samples, horizon, nu)

    def finish(self):
        self.process.stdin.close()
        out = self.process.stdout.read()
        self.process.wait()
        self.errors.seek(0)
        errors = self.errors.read().strip()
        self.errors.close()
        if self.process.returncode != 0:
            raise RuntimeError(f"mpcd-bench failed (exit {self.process.returncode}): {errors}")
        cell = json.loads(out.splitlines()[-1])
        if cell.get("floor_failed_steps"):
            raise RuntimeError(f"the floor's bare steps diverged {cell['floor_failed_steps']} times: its time is not a floor")
        return cell

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if not self.errors.closed:
            self.errors.close()


def loaded_library():
    """The libmujoco file mpcd loads, as `mpcd --check` names it."""
    out = subprocess.run([str(REPO / ".build" / "release" / "mpcd"), "--check", "--config", str(CONFIGS / "half_cheetah.toml")],
                         capture_output=True, text=True, check=True).stdout
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("  MuJoCo "))


def debian_library_folder():
    """The folder of Debian's libmujoco 2.2.2, as the loader's cache lists it."""
    out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    path = next(line.split("=> ")[1].strip() for line in out.splitlines() if "libmujoco.so.2.2.2 " in line)
    return str(Path(path).parent)


def library_step(config, folder=None):
    """Median us of one mj_step of the 2.2.2 build mpcd loads, or of the one in `folder`
    (LD_LIBRARY_PATH comes before the binary's own search path), on controls drawn as
    planner_controls draws them."""
    env = {**os.environ, "LD_LIBRARY_PATH": folder} if folder else None
    out = subprocess.run([str(BENCH), "physics", "--config", str(config), "--std", "planner", "--rollouts", "500"],
                         capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out)["step_us_p50"]


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


# mpcd's iteration and mujoco.rollout stay next to each other in both orders: their ratio is the
# one taken across processes
COLUMNS = ["step_by_step", "paired"]


def time_cell(config, theirs, k, threads, horizon, skip, repeats, order):
    """One round of one cell: the step-by-step column, and mpcd's iteration with its floor and
    mujoco.rollout paired call by call, back to back in `order`."""
    out = {"K": k, "threads": threads}
    for column in order:
        if column == "paired":
            with tempfile.TemporaryDirectory() as folder:
                mpcd = PacedMpcd(config, k, horizon, threads, repeats, folder)
                try:
                    mujoco_s, out["vs_mujoco"] = theirs.paired_with(mpcd, k, threads, repeats)
                    cell = mpcd.finish()
                finally:
                    mpcd.kill()
            out["mujoco_ms"] = mujoco_s * 1e3
            out["mpcd_ms"], out["plan_ms"] = cell["iteration_us_p50"] / 1e3, cell["prepared_us_p50"] / 1e3
            out["floor_ms"], out["vs_floor"] = cell["floor_us_p50"] / 1e3, cell["iteration_over_floor_p50"]
            out["step_us"] = cell["floor_us_p50"] * threads / (k * horizon * skip)
        else:
            out["step_by_step_ms"] = mpcd_cells(config, [k], horizon, repeats, "--step-by-step", threads=[threads])[0]["iteration_us_p50"] / 1e3
    return out


def summarise(rounds, name, horizon, skip, step_python):
    """One row per cell from its rounds: each time column the median of the rounds' p50s; each
    ratio (mpcd against mujoco.rollout within every round, against the floor within every timed
    call) its median over the rounds and its range without the lowest and highest round (all
    rounds when fewer than 4). The one-thread step time of a cell is that of the same K's
    one-thread cell."""
    rows = []
    for k, threads in dict.fromkeys((x["K"], x["threads"]) for x in rounds):
        mine = [x for x in rounds if x["K"] == k and x["threads"] == threads]
        one_thread = [x["step_us"] for x in rounds if x["K"] == k and x["threads"] == 1]
        row = {"model": name, "K": k, "H": horizon, "frame_skip": skip, "threads": threads, "rounds": len(mine),
               "step_python_us": step_python, "step_one_thread_us": float(np.median(one_thread)) if one_thread else float("nan")}
        for key in ["mpcd_ms", "plan_ms", "mujoco_ms", "step_by_step_ms", "floor_ms", "step_us"]:
            row[key] = float(np.median([x[key] for x in mine]))
        for x in mine:
            one = [y for y in rounds if y["K"] == k and y["threads"] == 1 and y.get("round") == x.get("round")]
            x["vs_one_core_floor"] = x["mpcd_ms"] / (k * horizon * skip * one[0]["step_us"] / threads / 1e3) if one else float("nan")
        for key in ["vs_mujoco", "vs_floor", "vs_one_core_floor"]:
            ratios = [x[key] for x in mine]
            ratios = sorted(ratios)
            trimmed = ratios[1:-1] if len(ratios) >= 4 else ratios
            row[key] = (float(np.median(ratios)), trimmed[0], trimmed[-1])
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="rounds, each timing every column of every cell once (1-100)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per cell and column in each round (1-1000; as many floor and mujoco.rollout calls, paired with mpcd's; an even count balances their orders)")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    if not (1 <= args.rounds <= 100 and 1 <= args.repeats <= 1000):
        parser.error(f"--rounds must be in 1-100 and --repeats in 1-1000, got {args.rounds} and {args.repeats}")
    measured = commit()
    library, debian = Path(loaded_library()), debian_library_folder()
    build = "Debian's build" if library.parent == Path(debian).resolve() else "MuJoCo's AVX build"
    where = library.relative_to(REPO) if REPO in library.parents else library
    library = f"libmujoco 2.2.2 from {where}, {build}"
    print(f"mpcd loads {library}", file=sys.stderr, flush=True)
    rows = []
    for name, horizon, samples in CASES:
        config = CONFIGS / f"{name}.toml"
        skip = frame_skip(config)
        print(f"{name}: H={horizon}, frame_skip={skip}, K={samples}, {args.rounds} rounds", file=sys.stderr, flush=True)
        theirs = PythonRollouts(config, horizon)
        # this VM's speed drifts by tens of percent over minutes: a cell's columns are timed back
        # to back, in an order that reverses every round, and ratios are taken within a round
        rounds, step_python, step_loaded, step_debian = [], [], [], []
        for r in range(args.rounds):
            order = COLUMNS if r % 2 == 0 else COLUMNS[::-1]
            step_python.append(python_step(config) * 1e6)
            step_loaded.append(library_step(config))
            step_debian.append(library_step(config, debian))
            for k in samples:
                for threads in THREADS:
                    rounds.append(time_cell(config, theirs, k, threads, horizon, skip, args.repeats, order) | {"round": r})
            print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"K={x['K']} {x['threads']} thr mpcd/mujoco.rollout {x['vs_mujoco']:.2f} "
                                                                 f"mpcd/floor {x['vs_floor']:.2f}" for x in rounds[-len(samples) * len(THREADS):]),
                  file=sys.stderr, flush=True)
        rows += [row | {"step_loaded_us": float(np.median(step_loaded)), "step_debian_us": float(np.median(step_debian))}
                 for row in summarise(rounds, name, horizon, skip, float(np.median(step_python)))]
    lines = ["| model | K | H x frame_skip | threads | mpcd iteration p50 (ms) | mujoco.rollout p50 (ms) | mpcd / mujoco.rollout, median (range) | "
             "floor (ms) | mpcd / floor, median (range) | mpcd plan, 1 iteration (ms) | mpcd step by step (ms) | one mj_step with T / 1 busy (us) | "
             "one mj_step: mpcd's 2.2.2 / Debian's 2.2.2 / 4.0 (us) | "
             "mpcd / floor with one core's step, median (range) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['K']} | {r['H']} x {r['frame_skip']} | {r['threads']} | {r['mpcd_ms']:.2f} | {r['mujoco_ms']:.2f} | "
                     f"{ratio(r['vs_mujoco'])} | {r['floor_ms']:.2f} | {ratio(r['vs_floor'])} | {r['plan_ms']:.2f} | "
                     f"{r['step_by_step_ms']:.2f} | {r['step_us']:.2f} / {r['step_one_thread_us']:.2f} | "
                     f"{r['step_loaded_us']:.2f} / {r['step_debian_us']:.2f} / {r['step_python_us']:.2f} | "
                     f"{ratio(r['vs_one_core_floor'])} |")
    table = "\n".join(lines)
    print(table)
    summary = verdict(rows)
    print(summary)
    if not args.no_docs:
        write_docs(rows, table + "\n\n" + summary, args, measured, library)


def ratio(summary):
    median, low, high = summary
    return f"{median:.3f} ({low:.2f}-{high:.2f})"


def judge(summary, mark):
    """"met" when even the range's top is at or under the mark, "not met" when its bottom is over
    it, else "not resolved": the rounds straddle the mark."""
    _, low, high = summary
    return "met" if high <= mark else ("not met" if low > mark else "not resolved")


def verdict(rows):
    """What the MuJoCo issue asks of the cells (mpcd at least as fast as mujoco.rollout; within 20%
    of the floor), each cell judged on its rounds' range without the extremes."""
    out = []
    for what, key, mark in [("at least as fast as mujoco.rollout", "vs_mujoco", 1.0), ("within 20% of the floor", "vs_floor", 1.2),
                            ("within 20% of the floor with one core's step time", "vs_one_core_floor", 1.2)]:
        judged = [judge(r[key], mark) for r in rows]
        counts = ", ".join(f"{word} in {judged.count(word)}" for word in ["met", "not resolved", "not met"] if word in judged)
        medians = [r[key][0] for r in rows]
        out.append(f"mpcd {what}: {counts} of {len(rows)} cells (medians {min(medians):.3f}-{max(medians):.3f})")
    return ("Each cell judged on its rounds' ratios without the lowest and highest round: met when all of them are at or under the mark, "
            "not met when all are over it, not resolved when they straddle it. " + "; ".join(out) + ".")


def write_docs(rows, table, args, measured, library):
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
                f"`.venv/bin/python benchmarks/mujoco_rollouts.py` ({args.rounds} rounds of {args.repeats} timed calls per cell and column, "
                f"{time.strftime('%Y-%m-%d')}, {measured}; mpcd's {library}):\n\n"
                f"{table}\n\n![MuJoCo rollouts](mujoco_rollouts.png)", heading="## MuJoCo rollouts against mujoco.rollout")
    print("wrote docs/benchmarks.md and docs/mujoco_rollouts.png")


if __name__ == "__main__":
    main()
