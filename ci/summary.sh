#!/usr/bin/env bash
# Markdown for a job summary: every record in DIR compared across OS releases and architectures.
set -euo pipefail
dir="${1:?usage: ci/summary.sh DIR}"
cd "$(dirname "$0")/.."
shopt -s nullglob
records=("$dir"/*.json)
if [ "${#records[@]}" -eq 0 ]; then
    echo "No records were produced."
    exit 0
fi
cargo run --quiet --release --locked -p threadleak -- compare --format markdown "${records[@]}"
