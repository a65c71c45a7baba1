"""The MuJoCo rollout benchmark's summary, judging and flags (its figures are benchmarks, not tests)."""
import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import MPCD, REPO

SCRIPT = REPO / "benchmarks" / "mujoco_rollouts.py"
BENCH = MPCD.parent / "mpcd-bench"


def load_script():
    spec = importlib.util.spec_from_file_location("mujoco_rollouts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_round(mpcd, mujoco, floor, k=64, threads=1, vs_floor=None, step_us=10.0):
    """A round of one cell; its ratios are the medians of its paired calls (here what the columns
    give, or `vs_floor`)."""
    return {"K": k, "threads": threads, "mpcd_ms": mpcd, "plan_ms": mpcd + 1, "mujoco_ms": mujoco, "step_by_step_ms": mpcd,
            "floor_ms": floor, "vs_mujoco": mpcd / mujoco, "vs_floor": mpcd / floor if vs_floor is None else vs_floor, "step_us": step_us}


def test_ratios_are_paired_within_a_round_and_the_extremes_left_out_of_the_range():
    summarise = load_script().summarise
    # the machine runs twice as slow in the second half: within a round mpcd takes 0.9 of
    # mujoco.rollout's time throughout, which the medians of the two columns would not show
    rounds = [one_round(9 * s, 10 * s, 8 * s) for s in (1, 1, 1, 2, 2, 2)] + [one_round(30, 10, 10), one_round(1, 10, 10)]
    [row] = summarise(rounds, "m", 20, 5, 12.0)
    assert row["rounds"] == 8
    assert row["vs_mujoco"][0] == pytest.approx(0.9)
    # the outliers (3.0 and 0.1) are the lowest and highest round: the range leaves them out
    assert row["vs_mujoco"][1:] == pytest.approx((0.9, 0.9))
    assert row["vs_floor"][1:] == pytest.approx((1.125, 1.125))
    # each time column is its own median (13.5 against 10), not the source of the ratio (0.9)
    assert row["mpcd_ms"] == pytest.approx(13.5) and row["mujoco_ms"] == pytest.approx(10)
    # cells stay apart
    rows = summarise([one_round(9, 10, 8), one_round(20, 10, 8, k=256, threads=2)], "m", 20, 5, 12.0)
    assert [(r["K"], r["threads"], r["vs_mujoco"][0]) for r in rows] == [(64, 1, pytest.approx(0.9)), (256, 2, pytest.approx(2.0))]


def test_the_floor_ratio_is_the_paired_calls_not_the_columns_and_the_one_thread_step_is_the_same_k():
    summarise = load_script().summarise
    # the two columns' medians say 1.5, the pairs timed call by call say 1.1: the pairs count
    rounds = [one_round(12, 10, 8, vs_floor=1.1, step_us=7.0) for _ in range(3)]
    rounds += [one_round(6, 5, 4, threads=2, vs_floor=1.05, step_us=9.0) for _ in range(3)]
    rounds += [one_round(40, 30, 30, k=256, vs_floor=1.3, step_us=8.0) for _ in range(3)]
    rows = summarise(rounds, "m", 20, 5, 12.0)
    assert [r["vs_floor"][0] for r in rows] == [pytest.approx(1.1), pytest.approx(1.05), pytest.approx(1.3)]
    assert [(r["step_us"], r["step_one_thread_us"]) for r in rows] == [(7.0, 7.0), (9.0, 7.0), (8.0, 8.0)]
    # read strictly, the floor of a two-thread cell takes the one-thread cell's step of the same
    # round: 64 x 20 x 5 steps x 7 us / 2 threads = 22.4 ms against mpcd's 6 ms
    assert rows[1]["vs_one_core_floor"][0] == pytest.approx(6 / 22.4)
    rounds = [one_round(6, 5, 4, threads=2, step_us=9.0) | {"round": r} for r in (0, 1)]
    rounds += [one_round(12, 10, 8, step_us=s) | {"round": r} for r, s in ((0, 7.0), (1, 14.0))]
    two = summarise(rounds, "m", 20, 5, 12.0)[0]
    assert sorted([two["vs_one_core_floor"][1], two["vs_one_core_floor"][2]]) == [pytest.approx(6 / 44.8), pytest.approx(6 / 22.4)]
    # a K timed with two threads only has no one-thread step to show
    [alone] = summarise([one_round(6, 5, 4, k=128, threads=2)], "m", 20, 5, 12.0)
    assert alone["step_one_thread_us"] != alone["step_one_thread_us"]  # NaN


def row(low, high):
    return {"vs_mujoco": ((low + high) / 2, low, high), "vs_floor": ((low + high) / 2 + 0.2, low + 0.2, high + 0.2),
            "vs_one_core_floor": ((low + high) / 2 + 0.2, low + 0.2, high + 0.2)}


def test_a_cell_is_met_only_when_its_whole_range_is_under_the_mark():
    script = load_script()
    assert script.judge((0.9, 0.8, 1.0), 1.0) == "met"
    assert script.judge((0.99, 0.8, 1.001), 1.0) == "not resolved"
    assert script.judge((1.1, 1.001, 1.2), 1.0) == "not met"
    assert script.judge((1.19, 1.0, 1.2), 1.2) == "met"
    assert script.judge((1.19, 1.0, 1.21), 1.2) == "not resolved"
    summary = script.verdict([row(0.8, 1.0), row(0.9, 1.1), row(1.05, 1.1)])
    assert "at least as fast as mujoco.rollout: met in 1, not resolved in 1, not met in 1 of 3 cells" in summary
    assert "within 20% of the floor: met in 1, not resolved in 1, not met in 1 of 3 cells" in summary
    assert "within 20% of the floor with one core's step time: met in 1, not resolved in 1, not met in 1 of 3 cells" in summary


@pytest.mark.parametrize("flags", [["--rounds", "0"], ["--repeats", "0"], ["--rounds", "-3"], ["--repeats", "1001"], ["--rounds", "101"]])
def test_the_script_refuses_an_empty_or_endless_run_before_any_timing(flags):
    result = subprocess.run([sys.executable, str(SCRIPT), "--no-docs", *flags], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--rounds must be in 1-100 and --repeats in 1-1000" in result.stderr, result.stderr


@pytest.mark.parametrize("flags, message", [
    (["planner", "--repeats=0"], "--repeats must be in 1...10000000, got 0"),
    (["planner", "--floor"], "--floor needs --config with a MuJoCo task"),
    (["planner", "--config", str(REPO / "deploy" / "config" / "pendulum.toml"), "--floor"], "--floor needs --config with a MuJoCo task"),
    (["planner", "--config", str(REPO / "deploy" / "config" / "mujoco" / "half_cheetah.toml"), "--step-by-step", "--whole-steps"],
     "--step-by-step and --whole-steps are two different comparisons"),
    (["planner", "--whole-steps"], "--whole-steps needs --config with a MuJoCo task"),
    (["planner", "--paced"], "--paced needs --json and one cell"),
    (["planner", "--warm-up=-1"], "--warm-up must be in 0...10000000, got -1"),
    (["planner", "--repeats", "1", "--warm-up", "9223372036854775807"], "--warm-up must be in 0...10000000"),
    (["noise", "--repeats=0"], "--repeats must be in 1...10000000"),
    (["noise", "--count=0"], "--count in 1..."),
])
def test_the_bench_refuses_what_would_time_nothing_or_overflow(flags, message):
    result = subprocess.run([str(BENCH), *flags, *(["--samples", "16", "--horizons", "4", "--threads", "1"] if flags[0] == "planner" else [])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and message in result.stderr, result.stderr


@pytest.mark.parametrize("warm_up", [0, 5])
def test_the_planner_bench_times_the_calls_it_is_asked_for_after_the_warm_up_it_is_asked_for(warm_up):
    result = subprocess.run([str(BENCH), "planner", "--samples", "16", "--horizons", "4", "--threads", "1", "--repeats", "3",
                             "--warm-up", str(warm_up), "--json"], capture_output=True, text=True, timeout=60, check=True)
    cells = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(cells) == 1
    assert f'"timed_calls":3' in cells[0] and f'"warm_up_calls":{warm_up}' in cells[0], cells[0]


def test_the_floor_is_timed_once_per_iteration_and_paired_with_it():
    config = str(REPO / "deploy" / "config" / "mujoco" / "half_cheetah.toml")
    result = subprocess.run([str(BENCH), "planner", "--config", config, "--samples", "16", "--horizons", "3", "--threads", "2", "--repeats", "5",
                             "--warm-up", "1", "--json", "--floor"], capture_output=True, text=True, timeout=120, check=True)
    [cell] = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert cell["timed_calls"] == 5 and cell["floor_failed_steps"] == 0
    assert cell["floor_us_p50"] > 0 and 0 < cell["iteration_over_floor_p50"] < 100
    # without --floor no floor is reported
    plain = subprocess.run([str(BENCH), "planner", "--config", config, "--samples", "16", "--horizons", "3", "--threads", "1", "--repeats", "2",
                            "--warm-up", "0", "--json"], capture_output=True, text=True, timeout=120, check=True)
    assert "floor" not in plain.stdout


def test_a_paced_bench_runs_a_call_per_line_and_says_so_when_input_ends_too_soon():
    config = str(REPO / "deploy" / "config" / "mujoco" / "half_cheetah.toml")
    command = [str(BENCH), "planner", "--config", config, "--samples", "16", "--horizons", "3", "--threads", "1", "--repeats", "3",
               "--warm-up", "1", "--json", "--floor", "--paced"]
    # two warm-up and timed calls' worth of lines, then the end: one warm-up, one timed call
    result = subprocess.run(command, input="\n\n", capture_output=True, text=True, timeout=120, check=True)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines[0]["start"]) == 17 + 1  # HalfCheetah: qpos 9, qvel 9 (mpcd's state)
    assert [(x.get("call"), x.get("warm_up")) for x in lines[1:3]] == [(0, True), (1, False)]
    assert all(x["iteration_us"] > 0 and x["floor_us"] > 0 for x in lines[1:3])
    assert lines[3]["timed_calls"] == 1
    # no line at all for a timed call: refused by name, no summary
    early = subprocess.run(command, input="\n", capture_output=True, text=True, timeout=120)
    assert early.returncode != 0 and "standard input ended before the first timed call" in early.stderr, early.stderr
    # two cells in one paced process would leave the other process guessing which call is which
    two = subprocess.run([*command[:5], "16,32", *command[6:]], input="\n" * 10, capture_output=True, text=True, timeout=120)
    assert two.returncode != 0 and "--paced needs --json and one cell" in two.stderr, two.stderr
    # 256 MiB without a newline is no line: it ends as input that ended early, and is not kept
    # (the bench's peak resident memory, measured by a process whose only child it is)
    # (written a MiB at a time after the start: a child forked while this process held the whole
    # input would count its pages)
    measure = ("import resource, subprocess, sys\n"
               "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=sys.stderr)\n"
               "chunk = b'x' * (1 << 20)\n"
               "for _ in range(256): p.stdin.write(chunk)\n"
               "p.stdin.close()\n"
               "print(p.wait(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    flood = subprocess.run([sys.executable, "-c", measure, *command], capture_output=True, text=True, timeout=120)
    code, peak_kib = map(int, flood.stdout.split())
    assert code != 0 and "standard input ended before the first timed call" in flood.stderr, flood.stderr
    assert peak_kib < 128 << 10, f"{peak_kib} KiB at the peak"


def test_a_paced_bench_writes_the_sequences_each_call_rolled_out(tmp_path):
    import numpy as np

    controls = tmp_path / "controls.f32"
    config = str(REPO / "deploy" / "config" / "mujoco" / "half_cheetah.toml")
    command = [str(BENCH), "planner", "--config", config, "--samples", "16", "--horizons", "3", "--threads", "1", "--repeats", "1",
               "--warm-up", "1", "--json", "--floor", "--paced", "--controls-out", str(controls)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert "start" in json.loads(process.stdout.readline())
        written = []
        for _ in range(2):
            process.stdin.write("\n")
            process.stdin.flush()
            json.loads(process.stdout.readline())  # the file is written before the line
            written.append(np.fromfile(controls, dtype=np.float32).reshape(16, 3, 6))
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    for sequences in written:
        assert np.all(np.abs(sequences) <= 1) and np.ptp(sequences, axis=0).min() > 0  # within HalfCheetah's ranges, samples differ
    assert not np.array_equal(written[0], written[1])  # each call its own samples
    refused = subprocess.run([*command[:-3], "--controls-out", str(controls)], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "--controls-out needs --paced" in refused.stderr, refused.stderr


@pytest.mark.parametrize("flags", [["--horizon", "10001"], ["--horizon", "0"], ["--rollouts", "10000001"], ["--rollouts", "0"],
                                   ["--threads", "65"], ["--threads", "0"]])
def test_the_physics_bench_refuses_what_would_time_nothing_or_run_for_days(flags):
    config = str(REPO / "deploy" / "config" / "mujoco" / "half_cheetah.toml")
    result = subprocess.run([str(BENCH), "physics", "--config", config, *flags], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--horizon must be in 1...10000, --rollouts in 1...10000000 and --threads in 1...64" in result.stderr, result.stderr


def test_the_physics_bench_refuses_a_task_that_is_not_mujoco():
    result = subprocess.run([str(BENCH), "physics", "--config", str(REPO / "deploy" / "config" / "pendulum.toml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "is not a MuJoCo task" in result.stderr, result.stderr


@pytest.mark.parametrize("where", ["no-such-folder/controls.f32", "."])
def test_a_controls_file_that_cannot_be_written_is_refused_before_any_timing(tmp_path, where):
    config = str(REPO / "deploy" / "config" / "mujoco" / "half_cheetah.toml")
    result = subprocess.run([str(BENCH), "planner", "--config", config, "--samples", "16", "--horizons", "3", "--threads", "1", "--repeats", "1",
                             "--json", "--paced", "--controls-out", str(tmp_path / where)], input="\n" * 30, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--controls-out" in result.stderr and "cannot write it" in result.stderr, result.stderr
    assert '"call"' not in result.stdout  # nothing was timed


@pytest.mark.parametrize("args, message", [
    (["episodes", "--steps", "0", "--samples", "1"], "--steps must be an integer in [1, 10000000], got 0"),
    (["episodes", "--steps=-5", "--samples", "1"], "--steps must be an integer in [1, 10000000], got -5"),
    (["episodes", "--steps", "1", "--samples", "1", "--starts", "EMPTY"], "no start states in it"),
    (["episodes", "--steps", "1", "--samples", "1", "--starts", "NAN"], "every start needs 2 finite values"),
    (["episodes", "--steps", "1", "--samples", "1", "--starts", "FIFO"], "is not a regular file"),
    (["episodes", "--steps", "1", "--samples", "1048576", "--horizon", "10000"], "K=1048576 x H=10000 needs"),
    (["planner", "--samples", "1048576", "--horizons", "10000", "--threads", "1", "--repeats", "1"], "K=1048576 x H=10000 needs"),
    (["planner", "--samples", "8", "--horizons", "4", "--threads", "1", "--repeats", "2", "--json", "--paced", "--controls-out", "FIFO"],
     "cannot write it (exists and is a pipe, not a regular file"),
])
def test_the_bench_refuses_what_it_cannot_run_with_a_clear_error(tmp_path, args, message):
    """Each of these once trapped (steps 0 or -5, no starts), aborted on an allocation, ran NaN
    starts to a JSON error, or hung on a FIFO."""
    import os
    (tmp_path / "starts.txt").write_text("0.1,0\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "nan.txt").write_text("nan,1\n")
    os.mkfifo(tmp_path / "fifo")
    names = {"EMPTY": "empty.txt", "NAN": "nan.txt", "FIFO": "fifo"}
    args = [str(tmp_path / names[a]) if a in names else a for a in args]
    if args[0] == "episodes" and "--starts" not in args:
        args += ["--starts", str(tmp_path / "starts.txt")]
    result = subprocess.run([str(BENCH), *args], capture_output=True, text=True, timeout=30, input="")
    assert result.returncode == 64 and message in result.stderr, (args, result.returncode, result.stderr[-2000:])
