#!/usr/bin/env bash
# Builds the libFuzzer targets in Fuzz/ with swiftc directly (SwiftPM's fuzzer build does not link
# here) and runs each for N seconds (default 60), growing the corpus in Fuzz/corpus/<target>, which
# `swift test` replays (FuzzCorpusTests). Usage: scripts/fuzz.sh [seconds] [--check]
# --check fuzzes a temporary copy of the corpus and leaves the repository's corpus alone (make test).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
corpus=Fuzz/corpus
if [ "${2:-}" = "--check" ]; then
  corpus=$(mktemp -d)
  cp -r Fuzz/corpus/. "$corpus"/
  trap 'rm -rf "$corpus"' EXIT
fi
out=.build/fuzz
mkdir -p "$out"
# swiftc, without the linker's harmless "Cannot export local symbol" warnings about the sanitizer runtime
build() { swiftc "$@" 2>&1 | { grep -v "Cannot export local symbol" || true; }; return "${PIPESTATUS[0]}"; }
blas="-I Sources/COpenBLAS -Xcc -I/usr/include/x86_64-linux-gnu/openblas-pthread -L/usr/lib/x86_64-linux-gnu/openblas-pthread -lopenblas"
flags="-parse-as-library -sanitize=fuzzer,address -O -g"
echo "building the decoder target"
build $flags -module-name DecoderFuzz Sources/Daemon/WireProtocol.swift Sources/FuzzSupport/FuzzFrames.swift \
  Fuzz/DecoderFuzz.swift -o "$out/decoder"
echo "building the configuration target"
# Models and Planners as instrumented static libraries, then the target against them
for module in Models Planners; do
  build -parse-as-library -sanitize=address -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp -O -g $blas -I "$out" \
    -module-name "$module" -emit-module -emit-module-path "$out/$module.swiftmodule" -emit-library -static \
    -o "$out/lib$module.a" Sources/$module/*.swift
done
build $flags $blas -I "$out" -L "$out" -lPlanners -lModels -module-name ConfigurationFuzz \
  Sources/FuzzSupport/FuzzConfiguration.swift Fuzz/ConfigurationFuzz.swift -o "$out/configuration"
for target in decoder configuration; do
  echo "fuzzing $target for $seconds s"
  "$out/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$corpus/$target" 2>&1 \
    | grep -E "^#[0-9]+.*(DONE|INITED)|stat::number_of_executed_units|stat::new_units_added|ERROR|SUMMARY" || true
  # keep only inputs that add coverage (and the named regression inputs)
  merged=$(mktemp -d)
  "$out/$target" -merge=1 "$merged" "$corpus/$target" >/dev/null 2>&1
  find "$corpus/$target" -type f ! -name 'regression-*' -delete
  cp "$merged"/* "$corpus/$target"/ 2>/dev/null || true
  rm -rf "$merged"
  echo "corpus: $(ls "$corpus/$target" | wc -l) inputs"
done
if ls crash-* leak-* timeout-* oom-* 2>/dev/null; then
  echo "fuzzing found a failure: the inputs above reproduce it ($out/<target> <input>)"
  exit 1
fi
