#!/usr/bin/env bash
# Everything CI checks, in the order a failure is cheapest to find: formatting; lints on Linux and on both
# Apple targets; the macOS code linked and ABI-checked for both Apple targets (built here, never run);
# the GitHub workflows (and the action they use) linted; the README's test command; then the installed
# binary.
set -euo pipefail
cd "$(dirname "$0")/.."

apple_targets=(aarch64-apple-darwin x86_64-apple-darwin)

# Each step says how long the one before it took, so that a slow CI says where its time goes.
last=$SECONDS
step() { printf '\n(%ds)\n== %s\n' "$((SECONDS - last))" "$*"; last=$SECONDS; }
trap 'printf "\n(%ds)\nci: %ds in all\n" "$((SECONDS - last))" "$SECONDS"' EXIT

step "toolchain"
rustup component add rustfmt clippy >/dev/null
rustup target add "${apple_targets[@]}" >/dev/null
if ! command -v cc >/dev/null; then
    # The fixture tests build fixtures/tt.c with the system C compiler.
    apt-get update -qq && apt-get install -y -qq gcc >/dev/null
fi
if [ ! -f /usr/lib/python3.11/test/test_subprocess.py ] && command -v apt-get >/dev/null \
    && [ -x /usr/bin/python3.11 ]; then
    # CPython's own tests run with and without exec (cases/guest.rs); where they cannot be installed, that
    # test says it is skipped.
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpython3.11-testsuite >/dev/null) \
        || echo "libpython3.11-testsuite could not be installed: CPython's tests are skipped"
fi
cargo --version
cc --version | head -n 1

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy (host)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The library as a crate's dev-dependency builds it (default-features = false: no command line, probe,
# symbolizer or JUnit).
step "cargo clippy -p threadleak --no-default-features --lib"
cargo clippy -p threadleak --no-default-features --lib --locked -- -D warnings

step "weight: the light library's packages, the DWARF readers' versions, the README's size, long files"
bash ci/weight.sh

# Linted without the probe the binary carries (THREADLEAK_EMBED_PROBE=0, see harness/build.rs): building it
# means linking for the target, which the next step does with zig.
step "cargo clippy --target ${apple_targets[*]}"
THREADLEAK_EMBED_PROBE=0 cargo clippy --workspace --all-targets --locked \
    "${apple_targets[@]/#/--target=}" -- -D warnings

step "macOS code on Linux: link both Apple targets with zig, ABI check against the SDK headers"
bash ci/macos-on-linux.sh

step "actionlint"
(source ci/tools.sh && actionlint -no-color)

step "cargo test --workspace (the README's test command)"
cargo test --workspace --locked

step "cargo install --path harness, every subcommand from another folder"
bash ci/install-check.sh
