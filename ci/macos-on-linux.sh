#!/usr/bin/env bash
# The macOS code, checked on Linux for both Apple targets beyond what clippy sees: every library (the
# exec probe among them), binary, test and
# example linked against zig's libSystem stubs (an absent or misspelled symbol fails the link), the probe
# each binary carries found universal, and the ABI check against the SDK headers, including proof that it
# can fail.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/tools.sh
# Both targets in one build, so that each build's nested probe build for the other target finds a linker
# too: the binary of each carries the universal probe (harness/build.rs).
echo "link: aarch64-apple-darwin and x86_64-apple-darwin"
# rustc warns that it cannot ask xcrun for an SDK; zig brings its own libSystem stubs.
cargo zigbuild --quiet --locked --target aarch64-apple-darwin --target x86_64-apple-darwin \
    --workspace --lib --bins --tests --examples 2>&1 \
    | grep -v -e 'xcrun.*MacOSX.sdk' -e 'the SDK is needed by the linker' -e 'pass the path of an Xcode' \
    | sed '/^ *|\? *$/d' || true
test "${PIPESTATUS[0]}" -eq 0
for target in aarch64-apple-darwin x86_64-apple-darwin; do
    # The probe the binary just built carries (the newest of its build's outputs).
    probe=$(ls -t target/"$target"/debug/build/threadleak-*/out/probe.bin | head -n 1)
    python3 - "$probe" "$target" <<'PY'
import struct, sys
head = open(sys.argv[1], "rb").read(48)
magic, count = struct.unpack(">II", head[:8])
cpus = sorted(struct.unpack(">I", head[8 + 20 * i:12 + 20 * i])[0] for i in range(count)) if magic == 0xCAFEBABE else []
if cpus != [0x01000007, 0x0100000C]:
    sys.exit(f"{sys.argv[2]}: the probe the binary carries is not universal (arm64 and x86_64): {head[:8].hex()}")
print(f"{sys.argv[2]}: the probe the binary carries is universal (x86_64, arm64)")
PY
done
bash ci/abi-check.sh
bash ci/abi-check.sh --self-test
