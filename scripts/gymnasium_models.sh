#!/usr/bin/env bash
# Links Gymnasium's MuJoCo models (its MJCF files, installed with `gymnasium[mujoco]` in .venv) as
# deploy/config/mujoco/gymnasium, where the configurations in deploy/config/mujoco find them. They
# are Gymnasium's files: linked from the installed package, not copied into this repository.
# Usage: scripts/gymnasium_models.sh [python]   (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.venv/bin/python}
assets=$("$python" -c 'import gymnasium, os; print(os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets"))')
[ -f "$assets/inverted_pendulum.xml" ] || { echo "no Gymnasium MuJoCo models in $assets: pip install 'gymnasium[mujoco]'" >&2; exit 1; }
ln -sfn "$assets" deploy/config/mujoco/gymnasium
echo "deploy/config/mujoco/gymnasium -> $assets"
