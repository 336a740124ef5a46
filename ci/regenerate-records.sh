#!/usr/bin/env bash
# Rewrites fixtures/records/ with records made by this build: the Linux matrix on this machine, and the
# mach-sim matrix under both profiles with 70,000 self references per thread, where the profiles differ
# (the overrun). Review the diff before committing: every changed number needs an explanation.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p threadleak
bin=target/release/threadleak
out=fixtures/records
mkdir -p "$out"
"$bin" run --backend linux --format json --out "$out/linux.json"
for profile in xnu-11417 xnu-1504; do
    "$bin" run --backend mach-sim --profile "$profile" --self-calls 70000 --cycles 10 --warmup 1 \
        --format json --out "$out/mach-sim-$profile-overrun.json"
done
