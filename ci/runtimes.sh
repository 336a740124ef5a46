#!/usr/bin/env bash
# `threadleak exec` on real runtimes from Debian (SBCL, Perl, OpenJDK, Node.js, Go with cgo, CPython), ten
# runs of each program, beside a measurement made from outside the process (ci/runtimes.py says how).
# Installs what is missing, builds threadleak and its probe, and prints a markdown table; exits 1 when a
# runtime's verdict changes from run to run or disagrees with the outside measurement. Takes about an
# hour, so it is not part of .ci/run.
#
#   bash ci/runtimes.sh [--runs N] [--only NAME]... [--keep DIR]   (--keep: every exec record, for study)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pair in sbcl:sbcl perl:perl javac:default-jdk-headless node:nodejs go:golang-go cc:gcc; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
perl -Mthreads -e 1 2>/dev/null || missing+=(perl)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --locked --workspace --quiet
python3 ci/runtimes.py target/release/threadleak "$@"
