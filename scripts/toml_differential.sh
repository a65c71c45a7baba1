#!/usr/bin/env bash
# mpcd's TOML parser (Sources/Models/TOMLParser.swift) against Python's tomllib on random documents:
# both must read the same values from every document one accepts, and refuse the same ones.
# Usage: scripts/toml_differential.sh [seeds] [documents per seed]   (default: 4 seeds of 3000)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-4}
count=${2:-3000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
swiftc -O -module-name TOMLDump scripts/toml_differential/main.swift Sources/Models/TOMLParser.swift Sources/Models/ConfigTable.swift \
  -o "$work/dump" 2>&1 | { grep -v warning || true; }
cd "$work"
total=0
for seed in $(seq 1 "$seeds"); do
  python3 "$OLDPWD/scripts/toml_differential/generate.py" "$seed" "$count"
  "$work/dump" $(for i in $(seq 0 $((count - 1))); do echo "docs/$i.toml"; done) > got.json
  python3 - "$seed" <<'PY'
import json, sys
expected, got = json.load(open("expected.json")), json.load(open("got.json"))
def canonical(v):
    if isinstance(v, dict):
        if set(v) == {"float"} and v["float"] not in ("nan", "inf", "-inf"): return {"float": repr(float(v["float"]))}
        if set(v) == {"int"}: return v
        return {k: canonical(x) for k, x in v.items()}
    if isinstance(v, list): return [canonical(x) for x in v]
    return v
agree = refused = 0
differ = []
for i, (e, g) in enumerate(zip(expected, got)):
    g_refused = isinstance(g, dict) and set(g) == {"error"}
    if e is None and g_refused: refused += 1
    elif e is not None and not g_refused and canonical(e) == canonical(g): agree += 1
    else: differ.append(i)
print(f"seed {sys.argv[1]}: {agree} read alike, {refused} refused by both, {len(differ)} differ {differ[:10]}")
sys.exit(1 if differ else 0)
PY
  total=$((total + count))
done
echo "$total documents, no difference"
