#!/usr/bin/env python3
"""Whether `threadleak exec` changes what a program does, on a test suite nobody here wrote: CPython's own
thread-, process- and socket-heavy test modules (Debian's libpython3.11-testsuite), run plainly and under
`threadleak exec`, one test at a time (`-v`), each test's outcome compared. A test whose outcome differs is
run again, three times each way, alone: one that differs every time is a difference the probe makes, one
that does not is the test's own flakiness. Prints a markdown table and exits 1 on a difference the probe
makes.

usage: ci/transparency.py THREADLEAK [--python /usr/bin/python3] [--module NAME]...
"""

import argparse
import re
import subprocess
import sys

MODULES = [
    "test_threading",
    "test_thread",
    "test_threading_local",
    "test_queue",
    "test_subprocess",
    "test_socket",
    "test_socketserver",
    "test_selectors",
    "test_signal",
    "test_os",
    "test_concurrent_futures",
]

def outcomes(text):
    found = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+) \(([\w.]+)\)\s*\.\.\.\s*(ok|FAIL|ERROR|skipped|expected failure|unexpected success)", line)
        if m:
            found[f"{m.group(2)}.{m.group(1)}" if not m.group(2).endswith(m.group(1)) else m.group(2)] = m.group(3)
    return found


def run(command, timeout):
    try:
        p = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           text=True, errors="replace", timeout=timeout)
        return p.stdout
    except subprocess.TimeoutExpired as e:
        return (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")


def suite(python, module, threadleak=None, match=None):
    command = [python, "-m", "test", "-v", module]
    if match:
        command += ["-m", match]
    if threadleak:
        command = [threadleak, "exec", "--timeout", "60m", "--"] + command
    return outcomes(run(command, 3600))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("threadleak")
    parser.add_argument("--python", default="/usr/bin/python3")
    parser.add_argument("--module", action="append", default=[])
    args = parser.parse_args()
    modules = args.module or MODULES
    print("| module | tests | same outcome | differ once | differ every time |")
    print("|---|---:|---:|---:|---:|")
    failed = False
    for module in modules:
        alone = suite(args.python, module)
        measured = suite(args.python, module, args.threadleak)
        tests = sorted(set(alone) | set(measured))
        differ = [t for t in tests if alone.get(t) != measured.get(t)]
        always = []
        for test in differ:
            name = test.rsplit(".", 1)[-1]
            again = [(suite(args.python, module, match=name).get(test),
                      suite(args.python, module, args.threadleak, match=name).get(test)) for _ in range(3)]
            if all(a != m for a, m in again):
                always.append(f"{test}: {alone.get(test)} alone, {measured.get(test)} under exec")
        failed |= bool(always)
        print(f"| {module} | {len(tests)} | {len(tests) - len(differ)} | {len(differ) - len(always)} | {len(always)} |")
        for line in always:
            print(f"|  | {line} | | | |")
        sys.stdout.flush()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
