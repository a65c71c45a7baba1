#!/usr/bin/env bash
# The peer benchmark in one command: a virtual environment .venv-peers with torch (CPU use),
# pytorch-mppi and gymnasium, a release build, then benchmarks/peers.py (docs/benchmarks.md).
# The first run downloads torch from PyPI (several GB with its CUDA libraries; only the CPU is used).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-peers/bin/python ] || ! .venv-peers/bin/python -c "import torch, pytorch_mppi, gymnasium, matplotlib, zmq" 2>/dev/null; then
  python3 -m venv .venv-peers
  .venv-peers/bin/pip install -q --upgrade pip
  .venv-peers/bin/pip install -q torch pytorch-mppi gymnasium matplotlib pyzmq numpy
fi
swift build -c release
.venv-peers/bin/python benchmarks/peers.py "$@"
