#!/usr/bin/env bash
# The step of the GitHub Action (action.yml) that measures: `threadleak exec` on a program, or `threadleak
# run` on the matrix, with the record kept and the report written to the job summary. It takes the
# action's inputs as environment variables, so it runs the same outside GitHub (cases/action.rs calls it):
#
#   THREADLEAK_COMMAND   the program and its arguments, split into words as the shell splits them; empty:
#                        `threadleak run` (the matrix)
#   THREADLEAK_EXPECT    the baseline for --expect; empty: clean for a program, nothing for the matrix;
#                        `none`: nothing
#   THREADLEAK_EVERY     exec --every K;  THREADLEAK_TIMEOUT: --timeout (both optional)
#   THREADLEAK_ARGS      more arguments for threadleak, split as the shell splits them (e.g. `--cell
#                        thread=joined` for run)
#   THREADLEAK_NAME      the record's name prefix (default threadleak); the name adds the OS, its version
#                        and the architecture: threadleak-macos-15.5-arm64
#   THREADLEAK_OUT_DIR   where the record goes (default $RUNNER_TEMP, else a new temporary folder)
#   THREADLEAK_BIN       the threadleak binary (default: threadleak on PATH)
#
# Writes `record`, `name`, `verdict` and `exit-code` to $GITHUB_OUTPUT and the markdown report to
# $GITHUB_STEP_SUMMARY when they are set, and exits with threadleak's exit code.
set -uo pipefail

bin="${THREADLEAK_BIN:-threadleak}"
out_dir="${THREADLEAK_OUT_DIR:-${RUNNER_TEMP:-}}"
[ -n "$out_dir" ] || out_dir="$(mktemp -d)"
mkdir -p "$out_dir" || exit 4

case "$(uname -s)" in
    Darwin) os=macos; version="$(sw_vers -productVersion)" ;;
    Linux)
        os=linux
        # shellcheck disable=SC1091
        version="$( (. /etc/os-release && echo "${ID:-linux}-${VERSION_ID:-unknown}") 2>/dev/null || uname -r)"
        ;;
    *) os="$(uname -s | tr '[:upper:]' '[:lower:]')"; version="$(uname -r)" ;;
esac
name="${THREADLEAK_NAME:-threadleak}-$os-$version-$(uname -m)"
name="${name//[^A-Za-z0-9._-]/_}"
record="$out_dir/$name.json"

# Inputs are the workflow author's, but may hold anything (a newline, `::error::`): every one is printed
# escaped (bash's %q), and what threadleak prints while it runs (clap repeats a bad value) is kept from
# GitHub's workflow commands by stop-commands with a token nobody can guess.
quoted() { printf '%q' "$1"; }
say() { printf 'threadleak action: %s\n' "$*" >&2; }

# Words as the shell splits them: quotes group, nothing else is expanded (no globs, variables or command
# substitutions), so a command runs as written in the workflow. A text that cannot be split (an
# unbalanced quote) is refused.
words() {
    python3 -c 'import shlex, sys
try:
    words = shlex.split(sys.argv[1])
except ValueError as e:
    sys.stderr.write(str(e))
    sys.exit(2)
sys.stdout.write("".join(w + "\0" for w in words))' "$1"
}
split_into() {
    local -n into=$1
    local split
    split="$(mktemp)"
    if ! words "$2" >"$split" 2>/dev/null; then
        rm -f "$split"
        say "the $3 input cannot be split into words (an unbalanced quote?): $(quoted "$2")"
        exit 2
    fi
    mapfile -d '' into <"$split"
    rm -f "$split"
}
extra=()
[ -z "${THREADLEAK_ARGS:-}" ] || split_into extra "$THREADLEAK_ARGS" args

# The counts and durations are checked here, so that a bad one is refused with its value escaped.
if [ -n "${THREADLEAK_EVERY:-}" ] && ! [[ "$THREADLEAK_EVERY" =~ ^[0-9]+$ ]]; then
    say "every must be a whole number of threads, not $(quoted "$THREADLEAK_EVERY")"
    exit 2
fi
if [ -n "${THREADLEAK_TIMEOUT:-}" ] && ! [[ "$THREADLEAK_TIMEOUT" =~ ^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$ ]]; then
    say "timeout must be a duration (90s, 10m, 1h), not $(quoted "$THREADLEAK_TIMEOUT")"
    exit 2
fi

expect="${THREADLEAK_EXPECT:-}"
program=()
if [ -n "${THREADLEAK_COMMAND:-}" ]; then
    split_into program "$THREADLEAK_COMMAND" command
    if [ "${#program[@]}" -eq 0 ]; then
        say "the command $(quoted "$THREADLEAK_COMMAND") holds no word"
        exit 2
    fi
    [ -n "$expect" ] || expect=clean
    args=(exec)
    [ -z "${THREADLEAK_EVERY:-}" ] || args+=(--every "$THREADLEAK_EVERY")
    [ -z "${THREADLEAK_TIMEOUT:-}" ] || args+=(--timeout "$THREADLEAK_TIMEOUT")
else
    args=(run)
fi
[ "$expect" != none ] || expect=""
judged=()
[ -z "$expect" ] || judged=(--expect "$expect")
args+=("${extra[@]}" "${judged[@]}" --format json --out "$record")
[ "${#program[@]}" -eq 0 ] || args+=(-- "${program[@]}")

{
    printf 'threadleak'
    printf ' %q' "${args[@]}"
    printf '\n'
} >&2
token="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
echo "::stop-commands::$token"
"$bin" "${args[@]}"
code=$?
echo "::$token::"

verdict=""
if [ -f "$record" ]; then
    report="$("$bin" report --format markdown "${judged[@]}" "$record" 2>/dev/null)"
    verdict="$(python3 -c 'import json, sys
cells = json.load(open(sys.argv[1]))["cells"]
print(",".join(sorted({c.get("verdict", "?") if c.get("status") == "ok" else c.get("status", "?") for c in cells})))' "$record" 2>/dev/null)"
    if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
        {
            printf '## threadleak: %s (exit %s)\n\n' "$name" "$code"
            printf '%s\n\n' "$report"
        } >>"$GITHUB_STEP_SUMMARY"
    else
        printf '%s\n' "$report"
    fi
else
    echo "threadleak action: no record was written (exit $code)" >&2
    record=""
fi

if [ -n "${GITHUB_OUTPUT:-}" ]; then
    {
        echo "record=$record"
        echo "name=$name"
        echo "verdict=$verdict"
        echo "exit-code=$code"
    } >>"$GITHUB_OUTPUT"
fi
exit "$code"
