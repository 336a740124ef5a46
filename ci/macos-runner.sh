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

# An Intel-only program on an arm64 Mac (Rosetta): `exec` must refuse it with the reason (exit 3), not
# run it for dyld to stop at launch. Reported; a different outcome fails the job.
rosetta_status=0
if [ "$(uname -m)" = arm64 ] && arch -x86_64 /usr/bin/true 2>/dev/null; then
    cc -arch x86_64 -O2 fixtures/tt.c -o target/tt-x86_64
    code=0
    target/release/threadleak exec -- target/tt-x86_64 plain 100 >target/rosetta.txt 2>&1 || code=$?
    cat target/rosetta.txt
    if [ "$code" -ne 3 ] || ! grep -q "has no arm64 slice" target/rosetta.txt; then
        echo "exec on an x86_64 program under Rosetta: expected a refusal (exit 3), got exit $code" >&2
        rosetta_status=1
    fi
else
    echo "exec under Rosetta: not checked here ($(uname -m), or Rosetta is not installed)"
fi
[ "$run_status" -ne 0 ] && exit "$run_status"
exit "$rosetta_status"
