#!/usr/bin/env bash
# Builds the libFuzzer targets in Fuzz/ with swiftc directly (SwiftPM's fuzzer build does not link
# here) and runs each for N seconds (default 60), growing the corpus in Fuzz/corpus/<target>, which
# `swift test` replays (FuzzCorpusTests). Usage: scripts/fuzz.sh [seconds] [--check] [targets...]
# --check fuzzes a temporary copy of the corpus and leaves the repository's corpus alone (make test).
# Targets: decoder (data-socket messages), configuration (every configuration table, then a plan),
# control (control-socket requests), network (weights files), toml (configuration text). Default: all.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
corpus=Fuzz/corpus
if [ "${1:-}" = "--check" ]; then
  shift
  corpus=$(mktemp -d)
  cp -r Fuzz/corpus/. "$corpus"/
  trap 'rm -rf "$corpus"' EXIT
fi
targets=${*:-decoder configuration control network toml arrow}
out=.build/fuzz
mkdir -p "$out"
# swiftc, without the linker's harmless "Cannot export local symbol" warnings about the sanitizer runtime
build() { swiftc "$@" 2>&1 | { grep -v "Cannot export local symbol" || true; }; return "${PIPESTATUS[0]}"; }
blas="-I Sources/COpenBLAS -Xcc -I/usr/include/x86_64-linux-gnu/openblas-pthread -L/usr/lib/x86_64-linux-gnu/openblas-pthread -lopenblas"
# Models calls MuJoCo through the CMuJoCo shim (its header module and its C file, compiled below)
# and loads plug-ins through CPluginABI (its headers, and its C file for the private copy)
blas="$blas -I Sources/CMuJoCo/include -I Sources/CPluginABI/include $out/mpcd_mujoco.o $out/mpcd_plugin_abi.o -lmujoco"
zmq="-I Sources/CZeroMQ -lzmq"
flags="-parse-as-library -sanitize=fuzzer,address -O -g"
libraries() {
  # Models and Planners as instrumented static libraries, for the targets that link them
  # (and the file formats, the ZeroMQ wrapper and the control protocol they and the daemon's
  # configuration readers import)
  local modules="ConfigFiles Models Planners ZeroMQ ControlProtocol"
  [ -f "$out/libControlProtocol.a" ] && [ -z "$(find Sources/ConfigFiles Sources/Models Sources/Planners Sources/ZeroMQ Sources/ControlProtocol Sources/CMuJoCo Sources/CPluginABI Sources/CZeroMQ -newer "$out/libControlProtocol.a" -name '*.swift' -o -newer "$out/libControlProtocol.a" -name '*.[ch]' -o -newer "$out/libControlProtocol.a" -name '*.modulemap')" ] && return
  clang -c -O1 -g -fsanitize=address -I Sources/CMuJoCo/include Sources/CMuJoCo/mpcd_mujoco.c -o "$out/mpcd_mujoco.o"
  clang -c -O1 -g -fsanitize=address -I Sources/CPluginABI/include Sources/CPluginABI/abi.c -o "$out/mpcd_plugin_abi.o"
  for module in $modules; do
    build -parse-as-library -sanitize=address -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp -O -g $blas $zmq -I "$out" \
      -module-name "$module" -emit-module -emit-module-path "$out/$module.swiftmodule" -emit-library -static \
      -o "$out/lib$module.a" Sources/$module/*.swift
  done
}
for target in $targets; do
  echo "building the $target target"
  case $target in
    decoder)
      build $flags -module-name DecoderFuzz Sources/Daemon/WireProtocol.swift Sources/FuzzSupport/FuzzFrames.swift \
        Fuzz/DecoderFuzz.swift -o "$out/decoder" ;;
    configuration)
      libraries
      # the daemon's configuration readers, compiled into the target with what they use
      build $flags $blas $zmq -I "$out" -L "$out" -lControlProtocol -lZeroMQ -lPlanners -lModels -lConfigFiles -module-name ConfigurationFuzz \
        Sources/Daemon/DaemonConfiguration.swift Sources/Daemon/CurveConfiguration.swift Sources/Daemon/ActionSafety.swift \
        Sources/Daemon/MetricsListenAddress.swift Sources/Daemon/ServiceCredentials.swift Sources/Daemon/RecordingConfiguration.swift \
        Sources/Daemon/EmbeddedNetworks.swift Sources/Daemon/EmbeddedNetworkData.swift Sources/Daemon/IterationTimeCheck.swift \
        Sources/FuzzSupport/FuzzValueReader.swift Sources/FuzzSupport/FuzzConfiguration.swift Fuzz/ConfigurationFuzz.swift \
        -o "$out/configuration" ;;
    control)
      build $flags -module-name ControlFuzz Sources/ControlProtocol/ControlRequest.swift Sources/FuzzSupport/FuzzControl.swift \
        Fuzz/ControlFuzz.swift -o "$out/control" ;;
    network)
      libraries
      build $flags $blas -I "$out" -L "$out" -lModels -lConfigFiles -module-name NetworkFuzz \
        Sources/FuzzSupport/FuzzValueReader.swift Sources/FuzzSupport/FuzzNetworkFile.swift Fuzz/NetworkFuzz.swift \
        -o "$out/network" ;;
    toml)
      libraries
      build $flags $blas -I "$out" -L "$out" -lModels -lConfigFiles -module-name TOMLFuzz \
        Sources/FuzzSupport/FuzzTOML.swift Fuzz/TOMLFuzz.swift -o "$out/toml" ;;
    arrow)
      build $flags -module-name ArrowFuzz Sources/ArrowIPC/*.swift Sources/FuzzSupport/FuzzArrowStream.swift \
        Fuzz/ArrowFuzz.swift -o "$out/arrow" ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
  esac
done
status=0
for target in $targets; do
  mkdir -p "$corpus/$target"
  echo "fuzzing $target for $seconds s"
  "$out/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/$target-" "$corpus/$target" 2>&1 \
    | grep -E "^#[0-9]+.*(DONE|INITED)|stat::number_of_executed_units|stat::new_units_added|ERROR|SUMMARY|Test unit written" || true
  if ls "$out/$target"-crash-* "$out/$target"-leak-* "$out/$target"-timeout-* "$out/$target"-oom-* 2>/dev/null; then
    echo "fuzzing $target found a failure: the inputs above reproduce it ($out/$target <input>)"
    status=1
    continue
  fi
  # keep only inputs that add coverage (and the named regression inputs)
  merged=$(mktemp -d)
  "$out/$target" -merge=1 "$merged" "$corpus/$target" >/dev/null 2>&1
  find "$corpus/$target" -type f ! -name 'regression-*' -delete
  cp "$merged"/* "$corpus/$target"/ 2>/dev/null || true
  rm -rf "$merged"
  echo "corpus: $(ls "$corpus/$target" | wc -l) inputs"
done
exit $status
