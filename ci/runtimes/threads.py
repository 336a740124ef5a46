# CPython: N threads joined one by one (`join`), or daemon threads never joined (`detach`), up to 16
# unfinished at once. With THREADLEAK_OUTSIDE set, prints READY once done and waits, for ci/runtimes.py.
import os
import sys
import threading
import time

mode, n = sys.argv[1], int(sys.argv[2])
done = []
for i in range(n):
    while i - len(done) >= 16:
        time.sleep(0.0001)
    t = threading.Thread(target=lambda: done.append(1), daemon=mode != "join")
    t.start()
    if mode == "join":
        t.join()
while len(done) < n:
    time.sleep(0.01)
time.sleep(0.2)
if os.environ.get("THREADLEAK_OUTSIDE"):
    print("READY", flush=True)
    time.sleep(3)
