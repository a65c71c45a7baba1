#!/usr/bin/env bash
# MuJoCo's own release build of libmujoco 2.2.2 (compiled with AVX, from PyPI's `mujoco` 2.2.2
# wheel) for mpcd's native builds, in place of Debian's libmujoco 2.2.2 (compiled for the baseline
# x86-64 CPU, no AVX): same version, same headers (Debian's libmujoco-dev), about a quarter less
# time per step here (docs/models.md, "Which MuJoCo").
#
#   scripts/mujoco_library.sh [--wheel FILE]   fetch: put the library in .deps/mujoco-2.2.2 (make deps)
#   scripts/mujoco_library.sh --into DIR       place a copy beside the binaries in DIR (make build),
#                                              where they find it first ($ORIGIN in their search path)
#
# --wheel takes a wheel already downloaded instead of `pip download`. MPCD_MUJOCO_DIR sets another
# folder than .deps/mujoco-2.2.2 (the tests use their own).
#
# Nothing here stops a build. Where the CPU has no AVX, Debian's headers are not 2.2.2's, the wheel
# cannot be had or is not byte for byte the pinned one, or a file cannot be written, it says why,
# exits 0 and leaves no library at the name it manages (whatever was there that is not the pinned
# library, a link or a folder included, is removed): the binaries then load the system's.
set -uo pipefail
here=$PWD
cd "$(dirname "$0")/.." || exit 2

LIBRARY=libmujoco.so.2.2.2
# mujoco-2.2.2-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl and the library in it
WHEEL_SHA256=a074ea3d63ecc504367df46aa73b3066cd9e7d7ebfe8a48261fba04a9ca232ea
LIBRARY_SHA256=63bb16223b4ef9b86485aea53a9c83d61506ed3131dfd4b62c001f24809d4d61
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

absolute() { case "$1" in /*) echo "$1" ;; *) echo "$here/$1" ;; esac; }
CACHE=$(absolute "${MPCD_MUJOCO_DIR:-$PWD/.deps/mujoco-2.2.2}")
WHEEL="" INTO=""
for ((i = 1; i <= $#; i++)); do
  case "${!i}" in
    --wheel|--into)
      option=${!i}; i=$((i + 1))
      [ "$i" -le $# ] && [ -n "${!i}" ] || { echo "mujoco_library.sh: $option needs a value (see --help)" >&2; exit 2; }
      if [ "$option" = --wheel ]; then WHEEL=$(absolute "${!i}"); else INTO=$(absolute "${!i}"); fi ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "mujoco_library.sh: unknown option ${!i} (see --help)" >&2; exit 2 ;;
  esac
done
# the library this run manages: the fetched copy, or the one beside the binaries
TARGET=${INTO:-$CACHE}

SCRATCH=$(mktemp -d) || { echo "mujoco_library.sh: cannot make a scratch folder" >&2; exit 0; }
trap 'rm -rf "$SCRATCH"' EXIT

# Removes whatever is at the managed name, says why and which library the binaries load instead.
fallback() {
  rm -rf -- "${TARGET:?}/$LIBRARY" 2>/dev/null
  if [ -e "$TARGET/$LIBRARY" ] || [ -L "$TARGET/$LIBRARY" ]; then
    echo "MuJoCo: $1; and $TARGET/$LIBRARY cannot be removed: remove it, or mpcd may not start" >&2
  else
    echo "MuJoCo: $1; mpcd loads the system's libmujoco (Debian's, without AVX)" >&2
  fi
  exit 0
}
sha256() { sha256sum -- "$1" 2>/dev/null | cut -d' ' -f1; }
# the pinned library itself, not a link to one (whose target may change after the check)
pinned() { [ -f "$1" ] && [ ! -L "$1" ] && [ "$(sha256 "$1")" = "$LIBRARY_SHA256" ]; }
# puts a checked file at $TARGET/$LIBRARY in one rename, replacing whatever is there
place() {
  [ -d "$TARGET" ] || mkdir -p -- "$TARGET" 2>/dev/null || fallback "cannot make $TARGET"
  local staged
  staged=$(mktemp "$TARGET/.$LIBRARY.XXXXXX" 2>/dev/null) || fallback "cannot write in $TARGET"
  if ! cp -- "$1" "$staged" || ! chmod 0644 "$staged" || ! pinned "$staged"; then
    rm -f -- "$staged"; fallback "cannot copy the library into $TARGET"
  fi
  if [ -d "$TARGET/$LIBRARY" ] && [ ! -L "$TARGET/$LIBRARY" ]; then rm -rf -- "${TARGET:?}/$LIBRARY"; fi
  mv -fT -- "$staged" "$TARGET/$LIBRARY" 2>/dev/null || { rm -f -- "$staged"; fallback "cannot put the library in $TARGET"; }
}

[ "$(uname -m)" = x86_64 ] || fallback "MuJoCo's AVX build is for x86-64, this machine is $(uname -m)"
grep -qw avx /proc/cpuinfo || fallback "this CPU has no AVX"
header=/usr/include/mujoco/mujoco.h
grep -q '^#define mjVERSION_HEADER 222$' "$header" 2>/dev/null \
  || fallback "$header is not MuJoCo 2.2.2's (the AVX build must match the headers mpcd is compiled against)"

if [ -n "$INTO" ]; then
  pinned "$CACHE/$LIBRARY" || fallback "no AVX build fetched in $CACHE (make deps fetches it)"
  pinned "$INTO/$LIBRARY" || place "$CACHE/$LIBRARY"
  echo "MuJoCo: MuJoCo's AVX build of 2.2.2 beside the binaries in $INTO"
  exit 0
fi

if pinned "$CACHE/$LIBRARY"; then
  echo "MuJoCo: MuJoCo's AVX build of 2.2.2 in $CACHE"
  exit 0
fi
if [ -z "$WHEEL" ]; then
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 \
    --platform manylinux2014_x86_64 --dest "$SCRATCH" mujoco==2.2.2 >"$SCRATCH/pip.log" 2>&1 \
    || fallback "pip cannot download mujoco 2.2.2 ($(tail -n 1 "$SCRATCH/pip.log"))"
  for WHEEL in "$SCRATCH"/mujoco-2.2.2-*.whl; do break; done
fi
[ -f "$WHEEL" ] || fallback "no wheel at $WHEEL"
[ "$(sha256 "$WHEEL")" = "$WHEEL_SHA256" ] || fallback "$WHEEL is not the pinned mujoco 2.2.2 wheel (sha256 differs)"
"$PYTHON" - "$WHEEL" "$SCRATCH/$LIBRARY" <<'EOF' || fallback "cannot take $LIBRARY out of $WHEEL"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open("mujoco/libmujoco.so.2.2.2") as source, open(sys.argv[2], "wb") as target:
    shutil.copyfileobj(source, target)
EOF
pinned "$SCRATCH/$LIBRARY" || fallback "the library in $WHEEL is not the pinned one"
place "$SCRATCH/$LIBRARY"
echo "MuJoCo: MuJoCo's AVX build of 2.2.2 put in $CACHE"
