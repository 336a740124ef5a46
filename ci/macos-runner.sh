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
# Both Apple targets, so that the probe the binary carries is universal (harness/build.rs): exec then
# measures programs that run under Rosetta, and children of either architecture.
rustup target add aarch64-apple-darwin x86_64-apple-darwin
cargo build --release --locked --workspace
# Exit code 3 (a cell did not complete) still writes a record: keep it, fail the job at the end.
run_status=0
target/release/threadleak run --cell all --scenario all --format json --out "$file" || run_status=$?
cargo test --workspace --locked

# An Intel-only program on an arm64 Mac runs under Rosetta and loads the probe's x86_64 slice: `exec`
# measures it. Its clean mode must be clean (exit 0) and its leaking mode a leak (exit 1). Reported; a
# different outcome fails the job.
rosetta_status=0
if [ "$(uname -m)" = arm64 ] && arch -x86_64 /usr/bin/true 2>/dev/null; then
    cc -arch x86_64 -O2 fixtures/tt.c -o target/tt-x86_64
    for mode in release leak; do
        code=0
        target/release/threadleak exec --every 200 --expect clean -- target/tt-x86_64 "$mode" 2000 \
            >"target/rosetta-$mode.txt" 2>&1 || code=$?
        echo "== exec under Rosetta, tt $mode: exit $code"
        cat "target/rosetta-$mode.txt"
        expected=0
        [ "$mode" = leak ] && expected=1
        if [ "$code" -ne "$expected" ]; then
            echo "exec on an x86_64 program under Rosetta, tt $mode: expected exit $expected, got $code" >&2
            rosetta_status=1
        fi
    done
else
    echo "exec under Rosetta: not checked here ($(uname -m), or Rosetta is not installed)"
fi
[ "$run_status" -ne 0 ] && exit "$run_status"
exit "$rosetta_status"
