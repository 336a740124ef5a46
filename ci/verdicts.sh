#!/usr/bin/env bash
# What threadleak's verdicts miss and what they wrongly fail (ci/verdicts.py says how): leaks of one item
# in N threads, a cache, threads that never end, memory; the smallest steady leak each run length can see;
# clean crates' checks run a hundred times each. Builds what it needs; prints markdown tables; exits 1 on a
# missed leak or a false one. Takes about half an hour, so it is not part of .ci/run.
#
#   bash ci/verdicts.sh [--runs N] [--check-runs N]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p threadleak --quiet
cases=$(cargo test --release --locked -p threadleak --test cases --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cases" and m.get("executable"):
        print(m["executable"])')
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cc -g -O2 -pthread fixtures/rare.c -o "$build/rare"
python3 ci/verdicts.py target/release/threadleak "$cases" "$build/rare" "$@"
