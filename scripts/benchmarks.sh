#!/usr/bin/env bash
# Every figure in docs/benchmarks.md, in one run: planner and noise timings (mpcd-bench), end-to-end
# latency from Python (with a pyzmq echo baseline from the same run), and control results through
# the daemon, the scaling sweeps and the MuJoCo rollouts against mujoco.rollout (each writes its own
# block and plot into docs/benchmarks.md).
# Called by `make bench`; prints Markdown-ready tables. The peer benchmark is scripts/peer_bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
.build/release/mpcd-bench planner --repeats 500
echo
.build/release/mpcd-bench noise
echo
.venv/bin/python -m mpcd_client.bench --seconds 30 --busy-poll-us 6000 --pin 0
echo
.venv/bin/python -m mpcd_client.results
echo
.venv/bin/python benchmarks/scaling.py
echo
.venv/bin/python benchmarks/mujoco_rollouts.py
