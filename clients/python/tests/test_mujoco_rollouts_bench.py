"""The MuJoCo rollout benchmark's judging and flags (its figures are benchmarks, not tests)."""
import importlib.util
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


def row(vs_mujoco, vs_floor):
    return {"vs_mujoco": (vs_mujoco, vs_mujoco - 0.1, vs_mujoco + 0.3), "vs_floor": (vs_floor, vs_floor - 0.1, vs_floor + 0.4)}


def test_the_marks_are_judged_on_the_median_at_their_edges():
    verdict = load_script().verdict
    # a round's worst (the range's top) does not decide; the median does, at and just past each mark
    assert "as fast as mujoco.rollout in 2 of 2 cells" in verdict([row(1.0, 1.2), row(0.5, 0.9)])
    assert "within 20% of the floor in 2 of 2" in verdict([row(1.0, 1.2), row(0.5, 0.9)])
    assert "as fast as mujoco.rollout in 1 of 2 cells" in verdict([row(1.01, 1.0), row(0.5, 0.9)])
    assert "within 20% of the floor in 1 of 2" in verdict([row(0.9, 1.21), row(0.5, 0.9)])


@pytest.mark.parametrize("flags", [["--rounds", "0"], ["--repeats", "0"], ["--rounds", "-3"]])
def test_the_script_refuses_an_empty_run_before_any_timing(flags):
    result = subprocess.run([sys.executable, str(SCRIPT), "--no-docs", *flags], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "must be at least 1" in result.stderr, result.stderr


@pytest.mark.parametrize("flags", [["--repeats=0"], ["--warm-up=-1"]])
def test_the_planner_bench_refuses_no_timed_calls_or_a_negative_warm_up(flags):
    result = subprocess.run([str(BENCH), "planner", "--samples", "16", "--horizons", "4", "--threads", "1", *flags],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--repeats must be at least 1 and --warm-up at least 0" in result.stderr, result.stderr


def test_the_planner_bench_times_exactly_what_it_is_asked_to_with_no_warm_up():
    result = subprocess.run([str(BENCH), "planner", "--samples", "16", "--horizons", "4", "--threads", "1", "--repeats", "1",
                             "--warm-up", "0", "--json"], capture_output=True, text=True, timeout=60, check=True)
    cells = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(cells) == 1 and '"samples":16' in cells[0]
