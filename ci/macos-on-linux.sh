#!/usr/bin/env bash
# The macOS code, checked on Linux for both Apple targets beyond what clippy sees: every library (the
# exec probe among them), binary, test and
# example linked against zig's libSystem stubs (an absent or misspelled symbol fails the link), and the
# ABI check against the SDK headers, including proof that it can fail.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/tools.sh
for target in aarch64-apple-darwin x86_64-apple-darwin; do
    echo "link: $target"
    # rustc warns that it cannot ask xcrun for an SDK; zig brings its own libSystem stubs.
    cargo zigbuild --quiet --locked --target "$target" --workspace --lib --bins --tests --examples 2>&1 \
        | grep -v -e 'xcrun.*MacOSX.sdk' -e 'the SDK is needed by the linker' -e 'pass the path of an Xcode' \
        | sed '/^ *|\? *$/d' || true
    test "${PIPESTATUS[0]}" -eq 0
done
bash ci/abi-check.sh
bash ci/abi-check.sh --self-test
