#!/usr/bin/env bash
# Speed targets, each checked by a benchmark that prints its figures and exits non-zero when it misses:
# wall time of whole runs, the harness's cycle rate against fixtures/tt.c, compare over 1,000 records,
# the cost of degrade's sampling, the exec probe's, the inventory of kinds, and recording sites.
set -euo pipefail
cd "$(dirname "$0")/.."
for bench in matrix_wall overhead compare_speed degrade_overhead exec_overhead inventory sites; do
    cargo bench --locked -p threadleak --bench "$bench"
done
