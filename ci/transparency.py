#!/usr/bin/env python3
"""Whether `threadleak exec` changes what a program does, on a test suite nobody here wrote: CPython's own
thread-, process- and socket-heavy test modules (Debian's libpython3.11-testsuite), run plainly and under
`threadleak exec`, each test's outcome (regrtest's `--junit-xml`) compared. A test whose outcome differs is
run again, three times each way, alone: one that differs every time is a difference the probe makes, one
that does not is the test's own flakiness. Prints a markdown table and exits 1 on a difference the probe
makes, or on a module that ran no test (nothing compared).

usage: ci/transparency.py THREADLEAK [--python /usr/bin/python3] [--module NAME]...
"""

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

# test_socket is left out: on a machine without a network (the development machine) it hangs plainly.
MODULES = [
    "test_threading",
    "test_thread",
    "test_threading_local",
    "test_queue",
    "test_subprocess",
    "test_socketserver",
    "test_selectors",
    "test_signal",
    "test_os",
    "test_concurrent_futures",
    "test_fork1",
    "test_poll",
    "test_select",
]

# Resources a module's tests need enabled (regrtest's -u): test_socketserver's servers listen on the
# loopback only, behind the "network" resource.
RESOURCES = {"test_socketserver": ["-u", "network"]}


def outcomes(junit):
    """Each test's outcome, from regrtest's JUnit XML: ok, skipped, failure or error."""
    found = {}
    try:
        root = ET.parse(junit).getroot()
    except (ET.ParseError, OSError):
        return found
    for case in root.iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        found[case.get("name")] = kinds[0] if kinds else "ok"
    return found


def suite(python, module, threadleak=None, match=None):
    with tempfile.TemporaryDirectory() as tmp:
        junit = os.path.join(tmp, "junit.xml")
        command = [python, "-m", "test", "--junit-xml", junit, *RESOURCES.get(module, []), module]
        if match:
            command += ["-m", match]
        if threadleak:
            command = [threadleak, "exec", "--timeout", "60m", "--"] + command
        try:
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                           timeout=3600)
        except subprocess.TimeoutExpired:
            pass
        return outcomes(junit)


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
        failed |= bool(always) or not tests
        print(f"| {module} | {len(tests)} | {len(tests) - len(differ)} | {len(differ) - len(always)} | {len(always)} |")
        for line in always:
            print(f"|  | {line} | | | |")
        if not tests:
            print(f"|  | {module} ran no test: nothing was compared | | | |")
        sys.stdout.flush()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
