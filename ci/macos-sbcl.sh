#!/usr/bin/env bash
# The runtime recipe of docs/exec.md (worked recipes) on a Mac runner: SBCL from Homebrew creating and
# joining 10,000 threads under `threadleak exec`, as markdown for the job summary. Informational: the
# workflow does not fail on it.
set -euo pipefail
cd "$(dirname "$0")/.."
brew install sbcl >/dev/null
cargo build --release --locked -p threadleak
echo "### SBCL on macOS $(sw_vers -productVersion) $(uname -m)"
echo
target/release/threadleak exec --format markdown -- \
    sbcl --non-interactive --no-userinit \
    --eval '(loop repeat 10000 do (sb-thread:join-thread (sb-thread:make-thread (lambda () nil))))' || true
