#!/usr/bin/env bash
# What it weighs to build, depend on and read, each figure printed against its target; exits non-zero
# when one is missed.
#
#   bash ci/weight.sh           the quick figures: packages of the library as a crate's dev-dependency,
#                               versions of the DWARF readers in the lock file, the README's size, files
#                               over 1,000 lines without a reason at their top (seconds; .ci/run runs it)
#   bash ci/weight.sh --build   also, in a fresh clone of HEAD with an empty target folder: the cold
#                               release build of the binary, then `cargo test --workspace` from there
#                               (minutes; the figures in docs/tests-and-benchmarks.md come from it)
set -euo pipefail
cd "$(dirname "$0")/.."
missed=0
figure() { # name, value, target, verdict (0: met)
    local mark=met
    [ "$4" -eq 0 ] || { mark=MISSED; missed=1; }
    printf '  %-58s %10s   target %-8s %s\n' "$1" "$2" "$3" "$mark"
}

echo "weight:"
packages=$(cargo tree --locked -p threadleak --no-default-features -e normal,build --prefix none \
    | sed 's/ (.*//' | sort -u | wc -l)
figure "packages built for threadleak, default-features = false" "$packages" "<= 20" "$((packages > 20))"

for crate in gimli object addr2line; do
    versions=$(grep -c "^name = \"$crate\"$" Cargo.lock || true)
    figure "versions of $crate in Cargo.lock" "$versions" "<= 1" "$((versions > 1))"
done

readme=$(wc -c <README.md)
figure "README.md, bytes" "$readme" "<= 25600" "$((readme > 25600))"

# A file past ~1,000 lines says why at its top (a line of its first ten holding "1,000 lines").
long=0
while read -r lines file; do
    [ "$file" = total ] && continue
    if [ "$lines" -gt 1100 ] && ! head -n 10 "$file" | grep -q '1,000 lines'; then
        echo "    $file: $lines lines, and no reason at its top"
        long=$((long + 1))
    fi
done < <(find harness/src census/src probe/src -name '*.rs' -print0 | xargs -0 wc -l)
figure "source files over 1,100 lines without a reason" "$long" "0" "$((long > 0))"

if [ "${1:-}" = --build ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    git clone --quiet . "$work/clone"
    cd "$work/clone"
    start=$(date +%s.%N)
    cargo build --quiet --release --locked -p threadleak
    built=$(date +%s.%N)
    cargo test --quiet --workspace --locked >"$work/test.log" 2>&1 || { tail -n 40 "$work/test.log"; exit 1; }
    tested=$(date +%s.%N)
    build_s=$(echo "$built - $start" | bc)
    test_s=$(echo "$tested - $built" | bc)
    figure "cold cargo build --release -p threadleak, s" "$(printf %.0f "$build_s")" "<= 75" \
        "$(echo "$build_s > 75" | bc)"
    figure "then cargo test --workspace (its own cold dev build), s" "$(printf %.0f "$test_s")" "<= 120" \
        "$(echo "$test_s > 120" | bc)"
fi
exit "$missed"
