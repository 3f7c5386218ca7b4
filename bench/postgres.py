#!/usr/bin/env python3
"""ferry into PostgreSQL vs `psql \\copy` of the same CSV files, on the same server.

Starts a throwaway PostgreSQL server (initdb + postgres on a free port in a temp folder, as the
`postgres` user when run as root; its settings are initdb's defaults: fsync on, 128 MB shared
buffers) unless --url names one, then alternates, each on a fresh database:

  psql     one `psql` session doing `\\copy vehicles FROM 'file' (FORMAT csv, HEADER)` for every
           file into a table of 7 text columns (each \\copy its own transaction)
  ferry    `ferry --store URL run` on a fresh spool (files hard-linked into incoming/): hashing,
           the ledger row in the records' transaction, archive after commit — all guarantees on
  typed    the same with 7 typed columns and a record key on 3 of them (decided in memory,
           exact across hosts: see ARCHITECTURE.md)

then ferry with 2 and 3 processes on one spool (they share the claims), typed with the key on 40
files and then on the same records resent (another dealer text: every key a duplicate), and the
server-side cost of COPY's formats for the same rows (csv and text vs binary, COPY FROM a server
file).

  python3 bench/postgres.py                  # big set, 3 rounds
  python3 bench/postgres.py --set small --rounds 1
  python3 bench/postgres.py --url postgres://postgres@127.0.0.1:5432/postgres
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest import FERRY, REPO, SETS, WORK, dataset_facts, generate, prepare_spool, run_measured  # noqa: E402

COLUMNS = "vin text, make text, model text, year text, price text, registered_at text, dealer text"


def pg_bindir():
    out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
    if out.returncode == 0 and os.path.exists(os.path.join(out.stdout.strip(), "initdb")):
        return out.stdout.strip()
    base = "/usr/lib/postgresql"
    versions = sorted((v for v in os.listdir(base) if v.isdigit()), key=int) if os.path.isdir(base) else []
    if not versions:
        raise SystemExit("no PostgreSQL found (apt-get install postgresql)")
    return os.path.join(base, versions[-1], "bin")


class Server:
    """A throwaway server; stopped when the benchmark ends."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ferry-bench-pg-")
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres", "postgres")
        bindir = pg_bindir()
        data = os.path.join(self.dir, "data")
        subprocess.run(self.as_user + [os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres",
                                       "-A", "trust", "-E", "UTF8", "--no-locale"],
                       check=True, stdout=subprocess.DEVNULL)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            self.as_user + [os.path.join(bindir, "postgres"), "-D", data, "-p", str(self.port),
                            "-c", "listen_addresses=127.0.0.1", "-k", self.dir],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "log"), "w"))
        deadline = time.time() + 30
        while subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", "select 1"],
                             capture_output=True).returncode != 0:
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit("the PostgreSQL server did not start; see %s/log" % self.dir)
            time.sleep(0.2)
        self.url = "postgres://postgres@127.0.0.1:%d/postgres" % self.port

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def with_db(url, db):
    return url.rsplit("/", 1)[0] + "/" + db


def psql(url, sql, **kw):
    return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-d", url, "-c", sql],
                          capture_output=True, text=True, check=True, **kw).stdout.strip()


def fresh_db(url, name):
    psql(url, "DROP DATABASE IF EXISTS %s" % name)
    psql(url, "CREATE DATABASE %s" % name)
    return with_db(url, name)


def run_psql(url, d, files):
    db = fresh_db(url, "bench_psql")
    psql(db, "CREATE TABLE vehicles (%s)" % COLUMNS)
    script = os.path.join(WORK, "copy.sql")
    with open(script, "w") as fh:
        for f in files:
            fh.write("\\copy vehicles FROM '%s' WITH (FORMAT csv, HEADER true)\n" % os.path.join(d, f))
    with open(script) as stdin:
        el, rss = run_measured(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db], stdin=stdin,
                               stdout=subprocess.DEVNULL)
    n = int(psql(db, "SELECT count(*) FROM vehicles"))
    return el, rss, n, len(files)


def run_ferry(url, d, files, typed=False, processes=1):
    db = fresh_db(url, "bench_ferry")
    spool = os.path.join(WORK, "ferry-pg")
    prepare_spool(spool, d, files, typed)
    cmd = [FERRY, "--root", spool, "--store", db, "-q", "run", "--no-progress"]
    t = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL) for _ in range(processes)]
    rss = 0.0
    for p in procs:
        _, status, ru = os.wait4(p.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("ferry failed: %s" % " ".join(cmd))
        rss = max(rss, ru.ru_maxrss / 1024.0)
    el = time.perf_counter() - t
    n = int(psql(db, "SELECT count(*) FROM vehicles"))
    nfiles = int(psql(db, "SELECT count(*) FROM files WHERE state = 'ingested'"))
    shutil.rmtree(spool, ignore_errors=True)
    return el, rss, n, nfiles


def run_resend(url, d, files, limit=40):
    """Typed with the key: the first `limit` files, then the same records again with another
    dealer text (new content, every key a duplicate), into the same database."""
    resent = os.path.join(WORK, "resend")
    os.makedirs(resent, exist_ok=True)
    for f in files[:limit]:
        out = os.path.join(resent, f)
        if not os.path.exists(out):
            with open(os.path.join(d, f)) as i, open(out + ".tmp", "w") as o:
                for line in i:
                    o.write(line.replace("contact sales desk", "call the desk"))
            os.rename(out + ".tmp", out)
    db = fresh_db(url, "bench_ferry")
    out = []
    for src in (d, resent):
        spool = os.path.join(WORK, "ferry-pg")
        prepare_spool(spool, src, files[:limit], True)
        t = time.perf_counter()
        subprocess.run([FERRY, "--root", spool, "--store", db, "-q", "run", "--no-progress"],
                       check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t)
        shutil.rmtree(spool, ignore_errors=True)
    rows = int(psql(db, "SELECT count(*) FROM vehicles"))
    dups = int(psql(db, "SELECT sum(duplicate_records) FROM files"))
    assert dups == rows, (rows, dups)
    return rows, out


def copy_formats(url, d, files, limit=20):
    """Server-side COPY FROM a file of the same rows in csv, text and binary: what the server
    spends parsing each format (no client, no network)."""
    db = fresh_db(url, "bench_formats")
    psql(db, "CREATE TABLE src (%s)" % COLUMNS)
    for f in files[:limit]:
        psql(db, "\\copy src FROM '%s' WITH (FORMAT csv, HEADER true)" % os.path.join(d, f))
    rows = int(psql(db, "SELECT count(*) FROM src"))
    tmp = tempfile.mkdtemp(prefix="ferry-bench-copy-")
    os.chmod(tmp, 0o777)
    out = {}
    for fmt in ("csv", "text", "binary"):
        path = os.path.join(tmp, "rows." + fmt)
        psql(db, "COPY src TO '%s' WITH (FORMAT %s)" % (path, fmt))
        times = []
        for _ in range(3):
            psql(db, "DROP TABLE IF EXISTS dst; CREATE TABLE dst (%s)" % COLUMNS)
            t = time.perf_counter()
            psql(db, "COPY dst FROM '%s' WITH (FORMAT %s)" % (path, fmt))
            times.append(time.perf_counter() - t)
        out[fmt] = rows / statistics.median(times)
    shutil.rmtree(tmp, ignore_errors=True)
    return rows, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=list(SETS), default="big")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--url", help="an existing server (a database `bench_*` is created and dropped on it)")
    ap.add_argument("--processes", default="2,3", help="also ferry with this many processes on one spool")
    args = ap.parse_args()
    if not os.path.exists(FERRY):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    os.makedirs(WORK, exist_ok=True)
    server = None if args.url else Server()
    url = args.url or server.url
    try:
        bench(url, args)
    finally:
        for db in ("bench_psql", "bench_ferry", "bench_formats"):
            psql(url, "DROP DATABASE IF EXISTS %s" % db)
        if server:
            server.stop()


def bench(url, args):
    version = psql(url, "SHOW server_version")
    print("machine: %d CPUs; PostgreSQL %s; server, psql and ferry on this machine" % (os.cpu_count(), version))
    d = generate(args.set)
    files, size = dataset_facts(d)
    want = SETS[args.set]["files"] * SETS[args.set]["rows"]
    print("%s set: %d files, %d rows, %.0f MiB" % (args.set, len(files), want, size / 2**20))
    print()
    print("%-10s %6s %9s %12s %9s" % ("tool", "round", "seconds", "rows/s", "RSS MiB"))
    times = {"psql": [], "ferry": [], "typed": []}
    rss = {"psql": 0.0, "ferry": 0.0, "typed": 0.0}
    tools = list(times)
    for r in range(args.rounds):
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for tool in order:
            if tool == "psql":
                el, m, n, nf = run_psql(url, d, files)
            else:
                el, m, n, nf = run_ferry(url, d, files, typed=tool == "typed")
            assert n == want and nf == len(files), (tool, n, nf)
            times[tool].append(el)
            rss[tool] = max(rss[tool], m)
            print("%-10s %6d %9.2f %12.0f %9.1f" % (tool, r + 1, el, n / el, m), flush=True)
    scaling = []
    for p in [int(x) for x in args.processes.split(",") if x]:
        el, m, n, nf = run_ferry(url, d, files, processes=p)
        assert n == want and nf == len(files), (p, n, nf)
        scaling.append((p, el, m))
        print("%-10s %6d %9.2f %12.0f %9.1f" % ("ferry x%d" % p, 1, el, n / el, m), flush=True)
    resend = run_resend(url, d, files) if args.set == "big" else None
    rows, formats = copy_formats(url, d, files)

    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: want / v for k, v in med.items()}
    print()
    print("median of %d rounds (rows/s)" % args.rounds)
    print("  psql \\copy     %10.0f" % rate["psql"])
    print("  ferry          %10.0f   %.2fx psql   peak RSS %.0f MiB" % (rate["ferry"], rate["ferry"] / rate["psql"],
                                                                       rss["ferry"]))
    print("  ferry typed    %10.0f   %.0f%% of ferry, %.2fx psql   peak RSS %.0f MiB" % (
        rate["typed"], 100 * rate["typed"] / rate["ferry"], rate["typed"] / rate["psql"], rss["typed"]))
    print("  ferry x1       %10.0f" % rate["ferry"])
    for p, el, m in scaling:
        print("  ferry x%d       %10.0f   (%d processes on one spool, peak RSS %.0f MiB each)" % (p, want / el, p, m))
    if resend:
        n, (first, again) = resend
        print("typed + key, %d rows: first load %.0f rows/s; resent with every key stored %.0f rows/s" % (
            n, n / first, n / again))
    print("server-side COPY FROM a file, %d rows: %s" % (
        rows, ", ".join("%s %.0f rows/s" % (k, v) for k, v in formats.items())))


if __name__ == "__main__":
    main()
