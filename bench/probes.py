#!/usr/bin/env python3
"""Health probes under load: how long `/healthz` takes to answer while hundreds of clients hold
connections to the metrics address open doing nothing, or sending a byte at a time.

Starts `ferry watch --metrics` (release build) on an empty spool, opens IDLE connections that
never send anything and TRICKLE connections that send one byte every 50 ms, then times PROBES
probes of /healthz (connect, request, whole answer) and prints p50, p99 and the slowest, with
the same figures without the load for comparison. Another build given with --before runs in
the same way, for a comparison in one run.

  python3 bench/probes.py
  python3 bench/probes.py --idle 500 --trickle 50 --probes 500
  python3 bench/probes.py --before /path/to/older/ferry
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
FERRY = os.path.join(os.path.dirname(HERE), "target", "release", "ferry")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe(port, timeout):
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.settimeout(timeout)
        c.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        while c.recv(65536):
            pass
    return time.perf_counter() - t


def measure(binary, idle, trickle, probes):
    root = tempfile.mkdtemp(prefix="ferry-probes-")
    port = free_port()
    d = subprocess.Popen([binary, "--root", root, "watch", "--init", "--metrics", f"127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        quiet = [probe(port, 30) for _ in range(probes)]
        conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(idle)]
        stop = threading.Event()

        def trickler():
            with socket.create_connection(("127.0.0.1", port)) as c:
                msg = b"GET /metrics HTTP/1.0\r\n"
                i = 0
                while not stop.is_set():
                    try:
                        c.sendall(msg[i % len(msg):i % len(msg) + 1])
                    except OSError:
                        # The server ended it at its deadline: come back, as a pest would.
                        c = socket.create_connection(("127.0.0.1", port))
                    i += 1
                    time.sleep(0.05)

        threads = [threading.Thread(target=trickler, daemon=True) for _ in range(trickle)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        loaded = []
        for _ in range(probes):
            try:
                loaded.append(probe(port, 30))
            except OSError:
                loaded.append(float("inf"))
        stop.set()
        for c in conns:
            c.close()
        return quiet, loaded
    finally:
        d.terminate()
        d.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def show(name, quiet, loaded):
    def figures(xs):
        xs = sorted(xs)
        p = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1000
        return "p50 %7.2f ms  p99 %8.2f ms  max %8.2f ms" % (statistics.median(xs) * 1000, p(0.99), xs[-1] * 1000)
    print("%-7s quiet   %s" % (name, figures(quiet)))
    print("%-7s loaded  %s" % (name, figures(loaded)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--trickle", type=int, default=20)
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--before", help="another ferry binary, measured the same way")
    args = ap.parse_args()
    print("health probes with %d idle and %d trickling connections open (%d probes each)"
          % (args.idle, args.trickle, args.probes))
    show("ferry", *measure(FERRY, args.idle, args.trickle, args.probes))
    if args.before:
        # An older build may serve one connection at a time: fewer probes, each may wait long.
        show("before", *measure(args.before, args.idle, args.trickle, min(args.probes, 5)))


if __name__ == "__main__":
    main()
