#!/usr/bin/env bash
# Speed targets: the full matrix's wall time and the harness's cycle rate against fixtures/tt.c.
# Each benchmark prints its figures and exits non-zero when it misses its target.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p threadleak --bench matrix_wall
cargo bench -p threadleak --bench overhead
