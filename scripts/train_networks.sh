#!/usr/bin/env bash
# Distils the networks shipped in deploy/networks/ from each example configuration's planner, then
# builds the pendulum policy into mpcd for its embedded default. Deterministic for a given build and
# PyTorch build; a few minutes on 2 cores, and about 7 more for the pendulum policy's fleet rounds (they need
# the client's .venv: make venv, or make test, sets it up). Usage: scripts/train_networks.sh [task ...]
#
# The labeller is the configuration's planner with more iterations, started from the cheaper of the
# network's proposal and its own plan carried forward, without the KL to the network
# (--label-prior-start cheaper --label-prior-strength 0, mpcd train's defaults, spelled out here):
# a labeller anchored to the network, as the daemon's paper-form default is, can only refine the
# network's mistakes, never correct them.
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(pendulum mountain_car cartpole point_mass unicycle)
train() {
  local task=$1 kind=$2
  shift 2
  echo "== $task $kind"
  /usr/bin/time -f "   %e s" .build/release/mpcd train --config "deploy/config/$task.toml" --kind "$kind" \
    --out "deploy/networks/${task}_${kind}.safetensors" --rounds 12 --episodes 10 --steps 200 --epochs 40 \
    --label-iterations 8 --label-prior-start cheaper --label-prior-strength 0 --seed 0 --fresh "$@"
  rm -f "deploy/networks/${task}_${kind}.safetensors.checkpoint"
}
for task in "${tasks[@]}"; do
  if [ "$task" = pendulum ] && [ ! -f .venv/.installed ]; then
    echo "scripts/train_networks.sh: the pendulum policy's fleet rounds run in .venv, which is not set up: make venv" >&2
    exit 1
  fi
done
for task in "${tasks[@]}"; do
  if [ "$task" = pendulum ]; then
    # labels from a stronger planner than the one the policy will run with (later flags win)
    train pendulum policy --label-samples 2048 --rounds 24
    # then three rounds of the fleet loop on it (docs/recording.md, "Rounds"): the embedded default
    # records 500 episodes a round with the policy as its prior, and the policy is continued on them
    # in PyTorch (needs the client's [learn] extra; about 7 minutes)
    echo "== pendulum policy, fleet rounds"
    /usr/bin/time -f "   %e s" .venv/bin/python -m mpcd_client.fleet_rounds --rounds 3 \
      --out deploy/networks/pendulum_policy.safetensors --no-docs
    train pendulum plan --label-samples 1024
    # the value at the end of pendulum_value.toml's rollouts: fitted value iteration whose soft
    # minimum has the planner's temperature (the default), about 20 s
    echo "== pendulum value"
    /usr/bin/time -f "   %e s" .build/release/mpcd train --value --config deploy/config/pendulum_value.toml \
      --out deploy/networks/pendulum_value.safetensors --rounds 60 --closed-loop-share 0.5 --hidden 48 --activation relu \
      --seed 0 --fresh
    rm -f deploy/networks/pendulum_value.safetensors.checkpoint
  elif [ "$task" = mountain_car ]; then
    train mountain_car policy
    # the value at the end of mountain_car_value.toml's rollouts (the environment's own price), ~1.5 min
    echo "== mountain_car value"
    /usr/bin/time -f "   %e s" .build/release/mpcd train --value --config deploy/config/mountain_car_value.toml \
      --out deploy/networks/mountain_car_value.safetensors --rounds 60 --closed-loop-share 0.25 --steps 400 \
      --hidden 64,64 --activation relu --soft-min-temperature 0 --seed 0 --fresh
    rm -f deploy/networks/mountain_car_value.safetensors.checkpoint
  else
    train "$task" policy
  fi
done
python3 scripts/embed_networks.py
