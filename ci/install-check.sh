#!/usr/bin/env bash
# `cargo install --path harness` as a user runs it, into a fresh root, then every subcommand of the
# installed binary run from an unrelated folder: the binary alone carries what it needs (exec's probe
# among it).
#
#   bash ci/install-check.sh             the debug profile, in this checkout's target folder (what
#                                        `cargo test` built: seconds; .ci/run does this)
#   bash ci/install-check.sh --release   a release build in a target folder of its own, as `cargo
#                                        install` does by default (minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ "${1:-}" = --release ]; then
    CARGO_TARGET_DIR="$work/target" cargo install --quiet --locked --path harness --root "$work/root"
else
    CARGO_TARGET_DIR="$PWD/target" cargo install --quiet --locked --debug --path harness --root "$work/root"
fi
bin="$work/root/bin/threadleak"
ls "$work/root/bin"
cc -O2 -pthread fixtures/tt.c -o "$work/tt"

mkdir "$work/elsewhere"
cd "$work/elsewhere"
fail() { echo "install-check: $*" >&2; exit 1; }
"$bin" --version
"$bin" list --cell thread=joined,self=none >/dev/null
"$bin" run --backend mach-sim --cell thread=joined --format json --out run.json
"$bin" scenarios | grep -q '^htop-task-threads  (per refresh' || fail "scenarios does not list the corpus"
mkdir eras
"$bin" run --backend mach-sim --profile all --scenario mailcore2-unjoined --cycles 100 --format json --out eras
"$bin" compare eras/*.json | grep -q 'changed between xnu-4570 (macOS 10.13) and xnu-4903 (macOS 10.14)' \
    || fail "compare over the profiles does not name the release that changed"
"$bin" exec --every 200 --expect clean --format json --out clean.json -- "$work/tt" release 2000 \
    || fail "exec of a clean program did not exit 0"
set +e
"$bin" exec --every 200 --expect clean --format json --out leak.json -- "$work/tt" leak 2000
code=$?
set -e
[ "$code" -eq 1 ] || fail "exec of a leaking program exited $code, not 1 (differs from clean)"
"$bin" report --format markdown leak.json | grep -q '| `exec` | leak |' || fail "report does not show the leak"
"$bin" compare run.json >/dev/null
"$bin" degrade --cell thread=joined,self=leaked,exc=none,fix=off --threads 2000 \
    --window 500 --out-dir degrade >/dev/null
ls degrade/degrade.svg >/dev/null
echo "install-check: every subcommand of the installed binary works from $PWD"
