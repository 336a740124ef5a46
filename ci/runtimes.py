#!/usr/bin/env python3
"""`threadleak exec` on real runtimes, against a measurement made from outside the process.

For each runtime program in ci/runtimes/ (threads joined one by one, and threads not joined), this runs
`threadleak exec` RUNS times and reads each record's verdict and per-thread figures; then it measures the
same program from outside, with no probe: it runs it five times at each of two thread counts, stops it
(SIGSTOP) once it says READY (all its threads done, before its teardown), counts
/proc/PID/{fd,maps,status,timers} the way threadleak's census does (malloc's heaps left out of vm_kib),
and divides the difference of the medians by the difference in threads; the spread of the five counts
at each thread count, per thread, is that measurement's own uncertainty. It prints a markdown table, and exits 1
when a runtime's verdict is not the same in every run, or disagrees with the outside measurement (where
only memory moves, or the outside measurement cannot tell whether it does, memory decides nothing: clean
and inconclusive both agree with it).

usage: ci/runtimes.py THREADLEAK [--runs N] [--only NAME]...
"""

import argparse
import json
import os
import signal
import subprocess
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = os.path.join(HERE, "runtimes")

# Whole items (descriptors, mappings, timers) move when they change by at least three items between the two
# thread counts, beyond the measurement's own spread (harness/src/analysis/evidence.rs, MIN_ITEMS); mappings
# that move with 128 KiB of memory or more each are a heap's chunks, memory (analysis.rs, HEAP_CHUNK_KIB);
# vm_kib moves beyond a tenth of a page per thread (analysis.rs, RATE_THRESHOLD and unit()).
COUNTS = ("fds", "maps", "timers")
MIN_ITEMS = 3
HEAP_CHUNK_KIB = 128
VM_THRESHOLD = 0.4
ARENA_HEAP = 64 << 20


def programs(build):
    """(name, how it runs, the threads it makes under exec, the two counts measured from outside)."""
    go = os.path.join(build, "lockosthread")
    out = []
    for mode in ("join", "detach"):
        out += [
            (f"perl {mode}", ["perl", os.path.join(PROGRAMS, "threads.pl"), mode, "{N}"], 10000, (2000, 10000)),
            (f"sbcl {mode}", ["sbcl", "--script", os.path.join(PROGRAMS, "threads.lisp"), mode, "{N}"], 10000, (2000, 10000)),
            (f"java {mode}", ["java", "-cp", build, "Threads", mode, "{N}"], 10000, (2000, 10000)),
            (f"node {mode}", ["node", os.path.join(PROGRAMS, "workers.js"), mode, "{N}"], 2000, (500, 2000)),
            (f"python {mode}", [sys.executable, os.path.join(PROGRAMS, "threads.py"), mode, "{N}"], 10000, (2000, 10000)),
        ]
    out.append(("go LockOSThread", [go, "detach", "{N}"], 10000, (2000, 10000)))
    return out


def argv(template, n):
    return [a.replace("{N}", str(n)) for a in template]


def census(pid):
    """The census of threadleak's Linux backend, from outside: fds, maps and vm_kib less malloc's heaps."""
    maps = open(f"/proc/{pid}/maps").read().splitlines()
    heaps, heap_lines = 0, 0
    previous = None
    for line in maps:
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        anonymous = len(fields) < 6
        if line.endswith("[heap]"):
            heaps += end - start
        elif anonymous and fields[1] == "rw-p" and start % ARENA_HEAP == 0 and end - start == ARENA_HEAP:
            heaps, heap_lines = heaps + ARENA_HEAP, heap_lines + 1
        elif (
            anonymous
            and fields[1] == "---p"
            and previous
            and previous[0] % ARENA_HEAP == 0
            and previous[1] == start
            and previous[2]
            and end - previous[0] == ARENA_HEAP
        ):
            heaps, heap_lines = heaps + ARENA_HEAP, heap_lines + 2
        previous = (start, end, anonymous and fields[1] == "rw-p")
    status = open(f"/proc/{pid}/status").read().splitlines()
    vm = next(int(l.split()[1]) for l in status if l.startswith("VmSize:"))
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "maps": len(maps) - heap_lines,
        "vm_kib": vm - heaps // 1024,
        "timers": sum(1 for l in open(f"/proc/{pid}/timers") if l.startswith("ID:")),
    }


def at_end(template, n):
    """The census of the program once it is done with its n threads, stopped then killed."""
    env = dict(os.environ, THREADLEAK_OUTSIDE="1")
    p = subprocess.Popen(argv(template, n), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    counts = None
    for line in p.stdout:
        if line.strip() == "READY":
            os.kill(p.pid, signal.SIGSTOP)
            try:
                counts = census(p.pid)
            finally:
                os.kill(p.pid, signal.SIGKILL)
            break
    p.stdout.close()
    p.wait()
    if counts is None:
        raise RuntimeError(f"{argv(template, n)} never said READY")
    return counts


def outside(template, n1, n2, repeats=5):
    """Per-thread rates from outside: the change of the median census between n1 and n2 threads, and its
    uncertainty, the spread of the repeated censuses at each count, per thread."""
    a = [at_end(template, n1) for _ in range(repeats)]
    b = [at_end(template, n2) for _ in range(repeats)]
    median = lambda xs: sorted(xs)[len(xs) // 2]
    rate, noise = {}, {}
    for k in a[0]:
        xa, xb = [c[k] for c in a], [c[k] for c in b]
        rate[k] = (median(xb) - median(xa)) / (n2 - n1)
        noise[k] = (max(xa) - min(xa) + max(xb) - min(xb)) / (n2 - n1)
    return rate, noise


def classify(per_thread, noise, threads):
    """A verdict from per-thread rates, by threadleak's rules: whole items that moved (by MIN_ITEMS over
    the `threads` between the two counts, beyond the measurement's own spread) decide, mappings that
    brought a heap's chunks of memory are memory, and memory decides nothing. "memory" when only memory
    moved; "unresolved" where the spread of memory reaches past the threshold, so that this measurement
    cannot tell whether it moves."""
    def items_moved(k):
        return abs(per_thread[k]) * threads >= MIN_ITEMS and abs(per_thread[k]) > noise[k]
    moved = [k for k in COUNTS if items_moved(k)]
    if "maps" in moved and per_thread["maps"] != 0 and per_thread["vm_kib"] / per_thread["maps"] >= HEAP_CHUNK_KIB:
        moved.remove("maps")
    if any(per_thread[k] > 0 for k in moved):
        return "leak"
    if any(per_thread[k] < 0 for k in moved):
        return "over-release"
    if abs(per_thread["vm_kib"]) > VM_THRESHOLD + noise["vm_kib"]:
        return "memory"
    return "unresolved" if abs(per_thread["vm_kib"]) + noise["vm_kib"] > VM_THRESHOLD else "clean"


def agrees(exec_class, truth):
    """Whether exec's verdict agrees with the outside measurement: the same; or, where only memory moves or
    this measurement cannot tell whether it does, clean (memory decides nothing) or inconclusive."""
    if truth in ("memory", "unresolved"):
        return exec_class in ("clean", "inconclusive")
    return exec_class == truth


def exec_class(cell):
    """The record's verdict, or its status when the program did not finish well."""
    return cell["verdict"] if cell["status"] == "ok" else cell["status"]


def figure(values):
    values = sorted(values)
    low, high = values[0], values[-1]
    text = lambda v: "0" if v == 0 else (f"{v:+.2f}".rstrip("0").rstrip(".") if abs(v) >= 0.005 else f"{v:+.1g}")
    return text(low) if low == high else f"{text(low)}..{text(high)}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("threadleak")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--keep", metavar="DIR", help="keep every exec record in DIR (NAME-RUN.json)")
    args = parser.parse_args()
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    build = tempfile.mkdtemp(prefix="threadleak-runtimes-")
    subprocess.run(["javac", "-d", build, os.path.join(PROGRAMS, "Threads.java")], check=True)
    subprocess.run(["go", "build", "-o", os.path.join(build, "lockosthread"), os.path.join(PROGRAMS, "lockosthread.go")],
                   check=True, env=dict(os.environ, CGO_ENABLED="1", GOFLAGS="-mod=mod", GO111MODULE="off"))
    versions = {
        "perl": ["perl", "-e", 'print "perl $^V"'],
        "sbcl": ["sbcl", "--version"],
        "java": ["java", "-version"],
        "node": ["node", "--version"],
        "python": [sys.executable, "--version"],
        "go": ["go", "version"],
    }
    print("| runtime | threads ended | verdicts of", args.runs, "runs | exec: fds, maps, vm_kib, unjoined, running per thread | outside: fds, maps, vm_kib per thread | agree |")
    print("|---|---:|---|---|---|---|")
    failed = False
    for name, template, n, (n1, n2) in programs(build):
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        cells = []
        for run in range(args.runs):
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                subprocess.run([args.threadleak, "exec", "--format", "json", "--out", out.name, "--"] + argv(template, n),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                cells.append(json.load(open(out.name))["cells"][0])
                if args.keep:
                    shutil.copy(out.name, os.path.join(args.keep, f"{name.replace(' ', '-')}-{run}.json"))
        outside_rate, outside_noise = outside(template, n1, n2)
        classes = [exec_class(c) for c in cells]
        seen = {c: classes.count(c) for c in dict.fromkeys(classes)}
        stable = len(seen) == 1
        truth = classify(outside_rate, outside_noise, n2 - n1)
        agree = stable and agrees(classes[0], truth)
        failed |= not agree
        figures = ", ".join(
            figure([c["per_thread"].get(k, 0.0) for c in cells]) for k in ("fds", "maps", "vm_kib", "unjoined", "running")
        )
        ended = sorted(max((p["ended"] for p in c.get("processes", [])), default=0) for c in cells)
        ended = f"{ended[0]}" if ended[0] == ended[-1] else f"{ended[0]}..{ended[-1]}"
        out_figures = ", ".join(f"{outside_rate[k]:+.3f} ± {outside_noise[k]:.3f}" for k in ("fds", "maps", "vm_kib"))
        label = lambda c: {"memory": "memory only", "unresolved": "memory unresolved"}.get(c, c)
        verdicts = ", ".join(f"{label(k)} ×{v}" for k, v in seen.items())
        print(f"| {name} | {ended} | {verdicts} | {figures} | {out_figures} ({label(truth)}) | {'yes' if agree else 'NO'} |")
        sys.stdout.flush()
    print()
    for runtime, command in versions.items():
        if not args.only or any(o.startswith(runtime) for o in args.only):
            version = subprocess.run(command, capture_output=True, text=True)
            print(f"- {runtime}: {(version.stdout or version.stderr).strip().splitlines()[0]}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
