#!/usr/bin/env bash
# Compares every hand-declared Mach type, constant, function signature and struct layout with the Darwin
# SDK headers that zig ships, for both Apple architectures: the abi_c example prints C static assertions
# from the Rust declarations, and zig compiles them against the headers.
#
#   ci/abi-check.sh              check; fails on any difference
#   ci/abi-check.sh --self-test  feed it deliberately wrong declarations and require that it fails
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/tools.sh
out=target/abi
mkdir -p "$out"

compile() { # arch, extra example args...
    local arch=$1
    shift
    cargo run --quiet --locked -p threadleak-census --example abi_c -- "$arch" "$@" >"$out/$arch$*.c"
    zig cc -target "$arch-macos" -c "$out/$arch$*.c" -o "$out/$arch.o" 2>"$out/$arch$*.log"
}

if [ "${1:-}" = "--self-test" ]; then
    if compile aarch64 --deliberate-errors; then
        echo "abi-check: deliberately wrong declarations passed: the check cannot fail" >&2
        exit 1
    fi
    for expected in "mach_port_get_refs: declared in Rust as" "MACH_PORT_TYPE_DEAD_NAME: declared in Rust as"; do
        if ! grep -q "$expected" "$out/aarch64--deliberate-errors.log"; then
            echo "abi-check: the wrong declaration '$expected' was not reported" >&2
            cat "$out/aarch64--deliberate-errors.log" >&2
            exit 1
        fi
    done
    echo "abi-check self-test: both deliberate errors were caught"
    exit 0
fi

for arch in aarch64 x86_64; do
    if ! compile "$arch"; then
        echo "abi-check: declarations differ from the $arch SDK headers:" >&2
        grep "error:" "$out/$arch.log" >&2 || cat "$out/$arch.log" >&2
        exit 1
    fi
    echo "abi-check $arch-macos: $(grep -c _Static_assert "$out/$arch.c") assertions hold"
done
