#!/usr/bin/env bash
# One Mac runner's job: a record of the full matrix and the corpus's scenarios on this macOS release
# (uploaded as an artifact named by release and architecture), then the tests, which assert the Mach
# snapshots (cells and scenarios) on the real kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${GITHUB_OUTPUT:=/dev/null}"

name="record-macos-$(sw_vers -productVersion)-$(uname -m)"
file="target/$name.json"
echo "artifact=$name" >>"$GITHUB_OUTPUT"
echo "file=$file" >>"$GITHUB_OUTPUT"

cargo --version
cargo build --release --locked --workspace
# Exit code 3 (a cell did not complete) still writes a record: keep it, fail the job at the end.
run_status=0
target/release/threadleak run --cell all --scenario all --format json --out "$file" || run_status=$?
cargo test --workspace --locked
exit "$run_status"
