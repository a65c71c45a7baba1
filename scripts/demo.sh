#!/usr/bin/env bash
# Starts mpcd on its embedded default, runs 10 Gymnasium Pendulum-v1 episodes through it with
# the Python bridge, prints returns and latency, and stops the daemon. Called by `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.build/demo
mkdir -p "$out"
.build/release/mpcd >"$out/mpcd.out" 2>"$out/mpcd.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "listening" "$out/mpcd.out" 2>/dev/null && break
  if ! kill -0 $pid 2>/dev/null; then
    echo "mpcd failed to start:" >&2
    cat "$out/mpcd.log" >&2
    exit 1
  fi
  sleep 0.1
done
cat "$out/mpcd.out"
.venv/bin/python -m mpcd_client.gym --env Pendulum-v1 --episodes 10 --seed 0 \
  --csv "$out/pendulum.csv" --plot "$out/pendulum.png"
