#!/usr/bin/env python3
"""What threadleak's verdicts miss and what they wrongly fail, measured on programs with a known answer.

1. Leaks of one item in N threads (`fixtures/rare.c`, threads created and joined one after another): the
   verdict, the rate, and the exit code of `exec --expect clean`, for each program, RUNS times; a cache, a
   clean run, threads that never end, memory.
2. The smallest steady leak each run length can see: for each run length, the limit a clean run reports
   ("a steady leak of one item in N threads ended would have shown"), then a leak of one in N (which must
   be found) and of one in 3N (which that run cannot see).
3. False failures of clean crates under `threadleak::check`: the clean tests of cases/library.rs (tokio's
   blocking pool, rayon, threadpool, scoped threads, a thread that ends after its call) each run RUNS times
   in a process of its own; every failure is counted.

It prints markdown tables and exits 1 when a leak is missed, a cache or a clean program is called a leak,
or a clean crate fails.

usage: ci/verdicts.py THREADLEAK CASES_TEST_BINARY RARE [--runs N] [--check-runs N]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

# The clean tests of cases/library.rs (module `library` of the `cases` test binary) that the false-failure
# count runs.
CLEAN_CHECKS = [
    "tokio_spawn_blocking_on_a_long_lived_runtime_leaks_nothing",
    "rayon_leaks_nothing_per_call",
    "a_long_lived_threadpool_leaks_nothing_per_job",
    "a_threadpool_created_and_joined_per_call_leaks_nothing",
    "scoped_threads_leak_nothing",
    "a_thread_that_ends_shortly_after_the_call_is_waited_for",
]


def exec_record(threadleak, program, flags=()):
    """`threadleak exec --expect clean FLAGS -- PROGRAM`: (exit code, the record's cell)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "exec.json")
        run = subprocess.run(
            [threadleak, "exec", "--expect", "clean", *flags, "--format", "json", "--out", out, "--", *program],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if not os.path.exists(out):
            raise RuntimeError(f"no record from {program}: {run.stderr}")
        with open(out) as f:
            return run.returncode, json.load(f)["cells"][0]


def rate(value):
    if value == 0:
        return "0"
    if abs(value) >= 0.01:
        return f"{value:+.2f}"
    return f"{value:+.2g}"


def one_in(limit):
    return int(1 / limit) if limit > 0 else 0


def known_answers(threadleak, rare, runs):
    """Section 1: (markdown lines, failures)."""
    cases = [
        # (arguments, what it leaves, the verdict it must get)
        (["4000", "20"], "200 fds (1 in 20)", "leak"),
        (["4000", "100"], "40 fds (1 in 100)", "leak"),
        (["20000", "200"], "100 fds (1 in 200)", "leak"),
        (["30000", "1000"], "30 fds (1 in 1,000)", "leak"),
        (["30000", "1000", "random"], "about 30 fds (1 in 1,000 at random)", "leak"),
        (["8000", "64", "cache"], "64 fds kept by the first 64 threads (a cache)", "clean"),
        (["4000", "0"], "nothing", "clean"),
        (["3000", "10", "linger"], "300 threads that never end, each with an fd", "leak"),
        (["2000", "1", "memory"], "1 MiB of memory per thread, no item", "clean"),
    ]
    lines = [
        f"| `rare ...` | left behind | verdicts of {runs} runs | fds per thread ended | running | `--expect clean` exits |",
        "|---|---|---|---|---|---|",
    ]
    failures = 0
    for args, left, expected in cases:
        results = [exec_record(threadleak, [rare, *args]) for _ in range(runs)]
        verdicts = [cell["verdict"] for _, cell in results]
        codes = sorted({code for code, _ in results})
        fds = sorted({rate(cell["per_thread"].get("fds", 0.0)) for _, cell in results})
        running = sorted({rate(cell["per_thread"].get("running", 0.0)) for _, cell in results})
        seen = ", ".join(f"{v} ×{verdicts.count(v)}" for v in dict.fromkeys(verdicts))
        ok = all(v == expected for v in verdicts)
        failures += not ok
        lines.append(
            f"| `{' '.join(args)}` | {left} | {seen}{'' if ok else ' (expected ' + expected + ')'} | "
            f"{', '.join(fds)} | {', '.join(running)} | {', '.join(map(str, codes))} |")
    return lines, failures


def detection_limits(threadleak, rare):
    """Section 2: (markdown lines, failures)."""
    lines = [
        "| threads | a clean run could see | 1 in N left: verdict | 1 in 3N left: verdict |",
        "|---:|---|---|---|",
    ]
    failures = 0
    for threads in (1000, 4000, 10000, 30000):
        _, clean = exec_record(threadleak, [rare, str(threads), "0"])
        n = one_in(clean["limits"]["fds"])
        _, seen = exec_record(threadleak, [rare, str(threads), str(n)])
        _, unseen = exec_record(threadleak, [rare, str(threads), str(3 * n)])
        failures += seen["verdict"] != "leak" or clean["verdict"] != "clean"
        lines.append(
            f"| {threads:,} | one item in {n:,} threads ended | {seen['verdict']} ({threads // n} left) | "
            f"{unseen['verdict']} ({threads // (3 * n)} left) |")
    return lines, failures


def clean_crates(cases, runs):
    """Section 3: (markdown lines, failures)."""
    lines = [f"| test (cases/library.rs) | passed of {runs} runs |", "|---|---|"]
    failures = 0
    for test in CLEAN_CHECKS:
        passed = 0
        for _ in range(runs):
            run = subprocess.run([cases, f"library::{test}", "--exact"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if run.returncode == 0 and re.search(r"test result: ok\. 1 passed", run.stdout):
                passed += 1
            else:
                sys.stderr.write(f"{test} failed:\n{run.stdout[-3000:]}\n")
        failures += runs - passed
        lines.append(f"| `{test}` | {passed} |")
    return lines, failures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("threadleak")
    parser.add_argument("cases")
    parser.add_argument("rare")
    parser.add_argument("--runs", type=int, default=3, help="runs of each program with a known answer")
    parser.add_argument("--check-runs", type=int, default=100, help="runs of each clean crate's check")
    args = parser.parse_args()
    failed = 0
    for title, (lines, failures) in [
        ("Programs with a known answer", known_answers(args.threadleak, args.rare, args.runs)),
        ("The smallest steady leak a run can see", detection_limits(args.threadleak, args.rare)),
        ("Clean crates under threadleak::check", clean_crates(args.cases, args.check_runs)),
    ]:
        print(f"\n#### {title}\n")
        print("\n".join(lines))
        sys.stdout.flush()
        failed += failures
    print(f"\n{failed} verdicts wrong")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
