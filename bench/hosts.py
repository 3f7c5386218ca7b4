#!/usr/bin/env python3
"""Three ferry hosts, one inbox, one PostgreSQL — and one host dies mid-run.

Each "host" is a `ferry watch` in network, PID and UTS namespaces of its own (`ip netns` + a veth
pair; it reaches PostgreSQL over that link, at the host side's address, and its process is
invisible to the others, so only its lease in the database can tell them it died). The hosts
share one spool folder, as they would over a network mount (`--poll`, no file events). Four
writers drop FILES files under temp names and rename them in. A third of the way through, host 2
loses its link, and a second later — holding the files it claimed meanwhile — is SIGKILLed (its
TCP sessions are never closed: the server notices through keepalives). Then:

- every file is in the ledger exactly once, ingested, and every record is stored exactly once;
- nothing is left in incoming/ or processing/;
- the claims host 2 held are taken over by the others: the time from the kill until the last of
  them is gone from processing/ is the recovery time (bound: one lease plus a third of it).

Needs root (namespaces) and PostgreSQL's server binaries; cleans up its namespaces, links and
server however it ends.

  sudo python3 bench/hosts.py                     # 2000 files, lease 10s
  sudo python3 bench/hosts.py --files 4000 --lease 15s
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest import FERRY, REPO  # noqa: E402
from postgres import pg_bindir, psql  # noqa: E402

HOSTS = 3
NET = "10.77"


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


class Lab:
    def __init__(self, lease):
        self.lease = lease
        self.dir = tempfile.mkdtemp(prefix="ferry-hosts-")
        os.chmod(self.dir, 0o755)
        self.spool = os.path.join(self.dir, "spool")
        os.makedirs(os.path.join(self.spool, "incoming"))
        self.netns = []
        self.server = None
        self.workers = {}

    def network(self):
        for h in range(1, HOSTS + 1):
            ns, veth = "ferry-h%d" % h, "ferryh%d" % h
            sh("ip", "netns", "add", ns)
            self.netns.append(ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "addr", "add", "%s.%d.1/24" % (NET, h), "dev", veth)
            sh("ip", "link", "set", veth, "up")
            sh("ip", "-n", ns, "addr", "add", "%s.%d.2/24" % (NET, h), "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def postgres(self):
        bindir = pg_bindir()
        pgdir = os.path.join(self.dir, "pg")
        os.makedirs(pgdir)
        shutil.chown(pgdir, "postgres", "postgres")
        data = os.path.join(pgdir, "data")
        user = ["runuser", "-u", "postgres", "--"]
        sh(*user, os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
           "--no-locale")
        with open(os.path.join(data, "pg_hba.conf"), "a") as fh:
            fh.write("host all all %s.0.0/16 trust\n" % NET)
        self.port = 55000 + os.getpid() % 1000
        listen = ",".join(["127.0.0.1"] + ["%s.%d.1" % (NET, h) for h in range(1, HOSTS + 1)])
        self.server = subprocess.Popen(
            user + [os.path.join(bindir, "postgres"), "-D", data, "-p", str(self.port), "-c",
                    "listen_addresses=" + listen, "-k", pgdir, "-c", "max_connections=100"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(pgdir, "log"), "w"))
        self.url = "postgres://postgres@127.0.0.1:%d/postgres" % self.port
        deadline = time.time() + 30
        while sh("psql", "-d", self.url, "-c", "select 1", check=False).returncode != 0:
            if time.time() > deadline:
                raise SystemExit("PostgreSQL did not start: %s/log" % pgdir)
            time.sleep(0.2)
        psql(self.url, "CREATE DATABASE hosts")
        self.db = self.url.rsplit("/", 1)[0] + "/hosts"
        with open(os.path.join(self.spool, "ferry.toml"), "w") as fh:
            fh.write('[store]\nlease = "%s"\n' % self.lease)

    def start(self, h):
        url = "postgres://postgres@%s.%d.1:%d/hosts" % (NET, h, self.port)
        log = open(os.path.join(self.dir, "host%d.log" % h), "w")
        # `ip netns exec` execs unshare, which forks ferry in the new PID namespace.
        p = subprocess.Popen(
            ["ip", "netns", "exec", "ferry-h%d" % h, "unshare", "--pid", "--fork", "--uts", "--kill-child",
             "sh", "-c", 'hostname host%d && exec "$@"' % h, "sh",
             FERRY, "--root", self.spool, "--store", url, "watch", "--poll", "300ms"],
            stdout=log, stderr=log)
        self.workers[h] = p

    def ferry_pid(self, h):
        """The ferry process of host h, as the root namespace sees it."""
        for _ in range(100):
            kids = sh("pgrep", "-P", str(self.workers[h].pid), check=False).stdout.split()
            if kids:
                return int(kids[0])
            time.sleep(0.05)
        raise SystemExit("host %d has no ferry process" % h)

    def cleanup(self):
        for p in self.workers.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        if self.server:
            self.server.terminate()
            self.server.wait()
        for ns in self.netns:
            sh("ip", "netns", "del", ns, check=False)
        for h in range(1, HOSTS + 1):
            sh("ip", "link", "del", "ferryh%d" % h, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def writers(spool, files, n_writers, pace):
    """Four writers renaming files into incoming/feed/ at `pace` files per second in all."""
    staging = os.path.join(os.path.dirname(spool), "staging")
    os.makedirs(staging, exist_ok=True)
    feed = os.path.join(spool, "incoming", "feed")
    os.makedirs(feed, exist_ok=True)

    def write(w):
        start = time.time()
        for k, i in enumerate(range(w, files, n_writers)):
            tmp = os.path.join(staging, "w%d-%d" % (w, i))
            with open(tmp, "w") as fh:
                fh.write("n,writer\n%d,%d\n" % (i, w))
            os.rename(tmp, os.path.join(feed, "f%06d.csv" % i))
            delay = start + (k + 1) * n_writers / pace - time.time()
            if delay > 0:
                time.sleep(delay)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(n_writers)]
    for t in threads:
        t.start()
    return threads


def claims(spool):
    proc = os.path.join(spool, "processing")
    out = set()
    for dirpath, dirnames, filenames in os.walk(proc):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out.update(os.path.join(dirpath, f) for f in filenames if not f.startswith("."))
    return out


def lab_main(make_lab, run_in, pace):
    """The command line of a many-hosts benchmark: parse, check root, build, run in a lab that is
    always cleaned up."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--pace", type=float, default=pace, help="files per second, all writers together")
    ap.add_argument("--lease", default="10s")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: network and PID namespaces")
    if not os.path.exists(FERRY):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    lab = make_lab(args.lease)
    try:
        run_in(lab, args)
    finally:
        lab.cleanup()


def main():
    lab_main(Lab, run, 150.0)


def run(lab, args):
    lab.network()
    lab.postgres()
    for h in range(1, HOSTS + 1):
        lab.start(h)
    time.sleep(1.0)
    t0 = time.time()
    threads = writers(lab.spool, args.files, 4, args.pace)
    # A third of the way: host 2 dies with its network.
    while len(os.listdir(os.path.join(lab.spool, "incoming", "feed"))) + count(lab) < args.files // 3:
        time.sleep(0.01)
    victim = lab.ferry_pid(2)
    # The link goes first: host 2 keeps claiming for a moment while it can no longer commit
    # (its sessions hang until TCP gives up), then dies holding those claims.
    sh("ip", "link", "set", "ferryh2", "down")
    time.sleep(1.0)
    os.kill(victim, signal.SIGKILL)
    killed = time.time()
    held = claims(lab.spool)
    print("host 2 killed and cut off at %.1f s, holding %d claimed files" % (killed - t0, len(held)))
    recovered = None
    deadline = time.time() + 300
    while True:
        now = time.time()
        if recovered is None and not (held & claims(lab.spool)):
            recovered = now
        if count(lab) >= args.files and recovered is not None and all(not t.is_alive() for t in threads):
            break
        if now > deadline:
            raise SystemExit("not everything was loaded within 300 s: %d files" % count(lab))
        time.sleep(0.05)
    done = time.time()
    for h in (1, 3):
        os.kill(lab.ferry_pid(h), signal.SIGTERM)
    for h in (1, 3):
        lab.workers[h].wait(timeout=60)
    verify(lab, args.files)
    print("recovery: host 2's claims taken over %.1f s after it died (lease %s)" % (recovered - killed, args.lease))
    print("all %d files loaded in %.1f s; exactly once: yes" % (args.files, done - t0))
    per_host = psql(lab.db, "SELECT string_agg(n::text, ' / ') FROM (SELECT count(*) AS n FROM files "
                            "GROUP BY worker ORDER BY 1 DESC) w")
    print("files per process: %s" % per_host)


def count(lab):
    try:
        return int(psql(lab.db, "SELECT count(*) FROM files WHERE state = 'ingested'"))
    except subprocess.CalledProcessError:
        return 0


def verify(lab, files):
    q = lambda sql: int(psql(lab.db, sql))  # noqa: E731
    checks = {
        "ledger rows": (q("SELECT count(*) FROM files"), files),
        "distinct paths": (q("SELECT count(DISTINCT path) FROM files"), files),
        "ingested": (q("SELECT count(*) FROM files WHERE state = 'ingested'"), files),
        "records": (q("SELECT count(*) FROM feed"), files),
        "distinct records": (q("SELECT count(DISTINCT n) FROM feed"), files),
        "left in incoming/": (sum(len(f) for _, _, f in os.walk(os.path.join(lab.spool, "incoming"))), 0),
        "left in processing/": (len(claims(lab.spool)), 0),
    }
    bad = {k: v for k, v in checks.items() if v[0] != v[1]}
    for k, (got, want) in checks.items():
        print("  %-20s %6d (want %d)" % (k, got, want))
    if bad:
        raise SystemExit("FAILED: %s" % bad)


if __name__ == "__main__":
    main()
