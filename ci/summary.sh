#!/usr/bin/env bash
# Markdown for a job summary: every record in DIR compared across OS releases and architectures, then,
# for each record made on a Mac, the cells whose real counts differ from the model's snapshots
# (`cases/snapshots/<cell>@mach.snap`, or the release's override), with both sets of numbers and the
# commands that keep a cell's numbers as an override for that release.
#
#   bash ci/summary.sh DIR     (THREADLEAK_BIN: the threadleak binary; default: built with cargo)
set -euo pipefail
dir="${1:?usage: ci/summary.sh DIR}"
[ -d "$dir" ] && dir="$(cd "$dir" && pwd)"
cd "$(dirname "$0")/.."
shopt -s nullglob
records=("$dir"/*.json)
if [ "${#records[@]}" -eq 0 ]; then
    echo "No records were produced."
    exit 0
fi
if [ -n "${THREADLEAK_BIN:-}" ]; then
    threadleak() { "$THREADLEAK_BIN" "$@"; }
else
    cargo build --quiet --release --locked -p threadleak
    threadleak() { target/release/threadleak "$@"; }
fi
threadleak compare --format markdown "${records[@]}"

for record in "${records[@]}"; do
    grep -q '"backend": *"macos"' "$record" || continue
    # Exit 1 (differs) and 125 (cannot tell) are what this section reports, not failures of the summary.
    set +e
    judged="$(threadleak report --format markdown --expect cases/snapshots "$record" 2>/dev/null)"
    code=$?
    set -e
    echo
    echo "### $(basename "$record" .json) against the model's snapshots"
    case "$code" in
        0 | 1 | 125) printf '%s\n' "$judged" | sed -n '/^#### Against the baseline/,$p' ;;
        *) echo "The record could not be judged (threadleak exited $code)." ;;
    esac
done
