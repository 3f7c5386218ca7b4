#!/usr/bin/env python3
"""ferry watch latency benchmark: files renamed into incoming/ at a steady rate; how long from
the rename until the file's row is committed (visible) in the ledger. Then the daemon's idle CPU.

  python3 bench/latency.py                  # 200 files/s for 30 s, then 30 s idle
  python3 bench/latency.py --rate 500 --seconds 10 --idle 10
  python3 bench/latency.py --ferry /path/to/previous/ferry --no-build   # another build

The daemon runs with default settings (release build). Each file is a small CSV written under a
temp name in a staging folder on the same filesystem and renamed in, the way careful partners
upload. A reader polls the ledger every millisecond (WAL: readers never block the daemon) and
records when each path first appears; latency = appearance − rename (resolution ~1 ms).
Idle CPU: the daemon's user+system ticks from /proc/PID/stat over the idle window.
"""

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FERRY = os.path.join(REPO, "target", "release", "ferry")


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def pct(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * len(values) + 0.5)) - 1))
    return values[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=200.0, help="files per second")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--idle", type=float, default=30.0, help="idle CPU window, seconds")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--ferry", default=FERRY, help="the ferry binary to measure")
    args = ap.parse_args()

    if not args.no_build and args.ferry == FERRY:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)

    os.makedirs(os.path.join(HERE, "work"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="latency-", dir=os.path.join(HERE, "work"))
    root = os.path.join(work, "spool")
    staging = os.path.join(work, "staging")
    os.makedirs(os.path.join(root, "incoming", "feed"))
    os.makedirs(staging)
    db = os.path.join(root, "ferry.db")
    env = dict(os.environ, FERRY_LOG="warn")
    daemon = subprocess.Popen([args.ferry, "--root", root, "watch"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Wait for the daemon to be up (its ledger exists), then let it settle.
        deadline = time.time() + 30
        while not os.path.exists(db):
            if time.time() > deadline or daemon.poll() is not None:
                sys.exit("the daemon did not start")
            time.sleep(0.01)
        time.sleep(0.5)

        renamed = {}
        seen = {}
        done = threading.Event()

        def poll():
            conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=5)
            last = 0
            while not done.is_set():
                try:
                    rows = conn.execute("SELECT id, path FROM files WHERE id > ? ORDER BY id", (last,)).fetchall()
                except sqlite3.OperationalError:
                    time.sleep(0.001)
                    continue
                now = time.monotonic()
                for rid, path in rows:
                    seen.setdefault(path, now)
                    last = rid
                time.sleep(0.001)
            conn.close()

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()

        n = int(args.rate * args.seconds)
        interval = 1.0 / args.rate
        start = time.monotonic()
        for i in range(n):
            target = start + i * interval
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            name = "f%06d.csv" % i
            tmp = os.path.join(staging, name)
            with open(tmp, "w") as f:
                f.write("id,value,note\n%d,%d,latency probe\n%d,%d,second row\n" % (i, i * 7, i, i * 11))
            os.rename(tmp, os.path.join(root, "incoming", "feed", name))
            renamed["feed/" + name] = time.monotonic()
        sent = time.monotonic() - start

        deadline = time.time() + 60
        while len(seen) < n and time.time() < deadline:
            time.sleep(0.01)
        done.set()
        poller.join()
        lat = [(seen[p] - t) * 1000.0 for p, t in renamed.items() if p in seen]
        missing = n - len(lat)

        print("ferry watch latency, rename into incoming/ → committed in the ledger (default settings)")
        print("  binary:    %s" % args.ferry)
        print("  files:     %d at %.0f/s over %.1f s (achieved %.0f/s)" % (n, args.rate, args.seconds, n / sent))
        print("  p50:       %.1f ms" % statistics.median(lat))
        print("  p90:       %.1f ms" % pct(lat, 90))
        print("  p99:       %.1f ms" % pct(lat, 99))
        print("  max:       %.1f ms" % max(lat))
        print("  mean:      %.1f ms" % statistics.mean(lat))
        if missing:
            print("  NOT SEEN:  %d files" % missing)

        # Idle CPU: nothing arrives; the daemon waits on events with its rescan timer.
        hz = os.sysconf("SC_CLK_TCK")
        time.sleep(1.0)
        t0, c0 = time.monotonic(), cpu_ticks(daemon.pid)
        time.sleep(args.idle)
        t1, c1 = time.monotonic(), cpu_ticks(daemon.pid)
        print("  idle CPU:  %.2f%% of one core over %.0f s (%d ticks at %d Hz)"
              % (100.0 * (c1 - c0) / hz / (t1 - t0), t1 - t0, c1 - c0, hz))
        ok = missing == 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
