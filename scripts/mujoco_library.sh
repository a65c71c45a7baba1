#!/usr/bin/env bash
# Puts MuJoCo's own release build of libmujoco 2.2.2 (compiled with AVX, from PyPI's `mujoco`
# 2.2.2 wheel) in .deps/mujoco-2.2.2, where native builds of mpcd look for it before Debian's
# libmujoco 2.2.2 (compiled for the baseline x86-64 CPU, no AVX). Same version, same headers
# (Debian's libmujoco-dev), about a quarter less time per step here (docs/models.md, "Which
# MuJoCo"). Run by `make deps`.
#
#   scripts/mujoco_library.sh [--wheel FILE]   a wheel already downloaded, instead of pip download
#
# Nothing here stops a build: where the CPU has no AVX, Debian's headers are not 2.2.2, or the
# wheel cannot be had or is not byte for byte the pinned one, it says why, leaves no library in
# .deps (a file there that is not the pinned library is removed) and mpcd runs on Debian's.
# MPCD_MUJOCO_DIR sets another folder (the tests use one of their own).
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=${MPCD_MUJOCO_DIR:-.deps/mujoco-2.2.2}
LIBRARY=libmujoco.so.2.2.2
# mujoco-2.2.2-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl and the library in it
WHEEL_SHA256=a074ea3d63ecc504367df46aa73b3066cd9e7d7ebfe8a48261fba04a9ca232ea
LIBRARY_SHA256=63bb16223b4ef9b86485aea53a9c83d61506ed3131dfd4b62c001f24809d4d61
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

WHEEL=""
for ((i = 1; i <= $#; i++)); do
  case "${!i}" in
    --wheel) i=$((i + 1)); WHEEL="${!i:?--wheel needs a file}" ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "mujoco_library.sh: unknown option ${!i} (see --help)" >&2; exit 2 ;;
  esac
done

fallback() {
  rm -f "$DEST/$LIBRARY"
  echo "MuJoCo: $1; mpcd uses Debian's libmujoco 2.2.2 (no AVX, slower per step)" >&2
  exit 0
}
sha256() { sha256sum "$1" | cut -d' ' -f1; }

[ "$(uname -m)" = x86_64 ] || fallback "MuJoCo's AVX build is for x86-64, this machine is $(uname -m)"
grep -qw avx /proc/cpuinfo || fallback "this CPU has no AVX"
header=/usr/include/mujoco/mujoco.h
grep -q '^#define mjVERSION_HEADER 222$' "$header" 2>/dev/null \
  || fallback "$header is not MuJoCo 2.2.2's (the AVX build must match the headers mpcd is compiled against)"
if [ -f "$DEST/$LIBRARY" ] && [ "$(sha256 "$DEST/$LIBRARY")" = "$LIBRARY_SHA256" ]; then
  echo "MuJoCo: MuJoCo's AVX build of 2.2.2 in $DEST"
  exit 0
fi

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
if [ -z "$WHEEL" ]; then
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 \
    --platform manylinux2014_x86_64 --dest "$SCRATCH" mujoco==2.2.2 >"$SCRATCH/pip.log" 2>&1 \
    || fallback "pip cannot download mujoco 2.2.2 ($(tail -n 1 "$SCRATCH/pip.log"))"
  WHEEL=$(ls "$SCRATCH"/mujoco-2.2.2-*.whl 2>/dev/null | head -n 1)
  [ -n "$WHEEL" ] || fallback "pip downloaded no mujoco 2.2.2 wheel"
fi
[ -f "$WHEEL" ] || fallback "no wheel at $WHEEL"
[ "$(sha256 "$WHEEL")" = "$WHEEL_SHA256" ] || fallback "$WHEEL is not the pinned mujoco 2.2.2 wheel (sha256 differs)"
"$PYTHON" - "$WHEEL" "$SCRATCH/$LIBRARY" <<'EOF' || fallback "cannot take $LIBRARY out of $WHEEL"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open("mujoco/libmujoco.so.2.2.2") as source, open(sys.argv[2], "wb") as target:
    shutil.copyfileobj(source, target)
EOF
[ "$(sha256 "$SCRATCH/$LIBRARY")" = "$LIBRARY_SHA256" ] || fallback "the library in $WHEEL is not the pinned one"
mkdir -p "$DEST"
install -m 0644 "$SCRATCH/$LIBRARY" "$DEST/.$LIBRARY.new"
mv -f "$DEST/.$LIBRARY.new" "$DEST/$LIBRARY"
echo "MuJoCo: MuJoCo's AVX build of 2.2.2 put in $DEST"
