#!/usr/bin/env bash
# Sourced by the CI scripts: a virtual environment with the pinned tools of ci/requirements.txt (zig,
# cargo-zigbuild, actionlint), cached across runs under ~/.cache and rebuilt when the pins change.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pins="$root/ci/requirements.txt"
hash="$(sha256sum "$pins" | cut -c1-12)"
venv="${THREADLEAK_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/threadleak-ci}/venv-$hash"
if [ ! -x "$venv/bin/cargo-zigbuild" ] || [ ! -x "$venv/bin/actionlint" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$pins"
fi
export PATH="$venv/bin:$PATH"
zig() { python -m ziglang "$@"; }
