#!/usr/bin/env python3
"""ferry ingest benchmark: ferry vs `sqlite3 .import` on the same CSV files.

Generates deterministic datasets (once; cached under bench/data), then alternates runs of

  ferry   `ferry run` on a fresh spool (files hard-linked into incoming/): hashing, ledger,
          durable commit (WAL, synchronous=FULL) before each file is archived — all guarantees on
  sqlite3 one `sqlite3` process doing `.import --csv` of every file into one table
          (default settings: rollback journal, synchronous=FULL, one transaction per file)

and prints rows/s, files/s, the ratio, and ferry's peak RSS.

  python3 bench/ingest.py                 # both sets, 3 rounds
  python3 bench/ingest.py --set small     # one set
  python3 bench/ingest.py --rounds 5
  python3 bench/ingest.py --before /path/to/older/ferry --tools ferry,before,typed,typed-before
                                          # an older build as a contender in the same rounds
"""

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA = os.path.join(HERE, "data")
WORK = os.path.join(HERE, "work")
FERRY = os.path.join(REPO, "target", "release", "ferry")

HEADER = "vin,make,model,year,price,registered_at,dealer\n"
MAKES = ["Volvo", "Toyota", "Volkswagen", "Ford", "Tesla", "BMW", "Škoda", "Renault", "Kia", "Hyundai"]
CITIES = ["Oslo", "Bergen", "Göteborg", "Malmö", "Hamburg", "Lyon", "Kraków", "Porto", "Århus", "Tampere"]
DEALERS = ["Autohaus Müller GmbH", "Nordic Cars AS", "Bilia", "Møller Mobility Group", "Motor Gruppen",
           "Carrefour Auto", "Auto Porto Lda", "City Motors Ltd"]

SETS = {
    # ~1 GiB in 200 files of 34,000 rows (~158 bytes per row).
    "big": {"files": 200, "rows": 34_000},
    # 20,000 files of 50 rows.
    "small": {"files": 20_000, "rows": 50},
}


def row(rng, i):
    vin = "%s%011d" % ("".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(6)), i)
    make = rng.choice(MAKES)
    model = "%s %s-%d" % (make[:3].upper(), rng.choice(["Sport", "Touring", "Estate", "Hybrid", "Electric"]), rng.randint(1, 99))
    year = rng.randint(1995, 2026)
    price = "%d.%02d" % (rng.randint(1500, 95000), rng.randint(0, 99))
    ts = "%04d-%02d-%02dT%02d:%02d:%02dZ" % (rng.randint(2015, 2026), rng.randint(1, 12), rng.randint(1, 28),
                                           rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))
    dealer = '"%s, %s branch %d, %s"' % (rng.choice(DEALERS), rng.choice(CITIES), rng.randint(1, 40),
                                         "contact sales desk for fleet terms")
    return "%s,%s,%s,%d,%s,%s,%s\n" % (vin, make, model, year, price, ts, dealer)


def generate(name):
    spec = SETS[name]
    d = os.path.join(DATA, name)
    stamp = os.path.join(d, ".complete")
    if os.path.exists(stamp):
        return d
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    rng = random.Random(20261122)
    n = 0
    t = time.time()
    for f in range(spec["files"]):
        lines = [HEADER]
        for _ in range(spec["rows"]):
            lines.append(row(rng, n))
            n += 1
        with open(os.path.join(d, "vehicles-%05d.csv" % f), "w") as fh:
            fh.write("".join(lines))
    # Settled long ago, as a partner's finished upload would be.
    old = time.time() - 3600
    for fn in os.listdir(d):
        os.utime(os.path.join(d, fn), (old, old))
    open(stamp, "w").close()
    print("generated %s: %d files, %d rows in %.0f s" % (name, spec["files"], n, time.time() - t), file=sys.stderr)
    return d


def dataset_facts(d):
    files = sorted(f for f in os.listdir(d) if f.endswith(".csv"))
    size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
    return files, size


def run_measured(cmd, **kw):
    """Runs a command; returns (seconds, peak RSS in MiB of the child)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, **kw)
    _, status, ru = os.wait4(p.pid, 0)
    el = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit("command failed (%d): %s" % (p.returncode, " ".join(cmd)))
    return el, ru.ru_maxrss / 1024.0


def drop_caches_hint():
    # Both tools read the same files; the first round warms the page cache for both equally.
    pass


# The typed variant: all 7 columns typed, a record key on 3 of them.
TYPED_CONFIG = """
[[dataset]]
name = "vehicles"
key = ["vin", "make", "year"]
columns = [
  { name = "vin", required = true },
  { name = "make", required = true },
  { name = "model" },
  { name = "year", type = "int" },
  { name = "price", type = "decimal", scale = 2 },
  { name = "registered_at", type = "datetime" },
  { name = "dealer", trim = true },
]
"""


def prepare_spool(spool, d, files, typed):
    """A fresh spool with the set's files hard-linked into incoming/vehicles/."""
    shutil.rmtree(spool, ignore_errors=True)
    inc = os.path.join(spool, "incoming", "vehicles")
    os.makedirs(inc)
    if typed:
        with open(os.path.join(spool, "ferry.toml"), "w") as fh:
            fh.write(TYPED_CONFIG)
    for f in files:
        os.link(os.path.join(d, f), os.path.join(inc, f))


def run_ferry(d, files, name, extra_args=(), typed=False, binary=None):
    spool = os.path.join(WORK, "ferry-" + name)
    prepare_spool(spool, d, files, typed)
    el, rss = run_measured([binary or FERRY, "--root", spool, "-q", "run", "--no-progress", *extra_args],
                           stdout=subprocess.DEVNULL)
    out = subprocess.run(["sqlite3", os.path.join(spool, "ferry.db"),
                          "select count(*) from vehicles; select count(*) from files where state='ingested';"],
                         capture_output=True, text=True, check=True).stdout.split()
    shutil.rmtree(spool, ignore_errors=True)
    return el, rss, int(out[0]), int(out[1])


def run_sqlite(d, files, name):
    work = os.path.join(WORK, "sqlite-" + name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    db = os.path.join(work, "import.db")
    script = os.path.join(work, "import.sql")
    with open(script, "w") as fh:
        fh.write("CREATE TABLE vehicles(vin TEXT, make TEXT, model TEXT, year TEXT, price TEXT, registered_at TEXT, dealer TEXT);\n")
        for f in files:
            fh.write(".import --csv --skip 1 %s vehicles\n" % os.path.join(d, f))
    with open(script) as stdin:
        el, rss = run_measured(["sqlite3", db], stdin=stdin, stdout=subprocess.DEVNULL)
    n = int(subprocess.run(["sqlite3", db, "select count(*) from vehicles"], capture_output=True,
                           text=True, check=True).stdout)
    shutil.rmtree(work, ignore_errors=True)
    return el, rss, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=list(SETS), action="append")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tools", default="ferry,typed,sqlite3",
                    help="comma-separated among ferry (zero-config), typed (7 typed columns, key on 3), "
                         "sqlite3, before and typed-before (the --before binary)")
    ap.add_argument("--before", help="another ferry binary, run as the contenders 'before' and 'typed-before'")
    args = ap.parse_args()
    sets = args.set or list(SETS)
    if not os.path.exists(FERRY):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    os.makedirs(WORK, exist_ok=True)

    print("machine: %d CPUs, %s" % (os.cpu_count(), subprocess.run(["sqlite3", "--version"], capture_output=True,
                                                                      text=True).stdout.split()[0]))
    print()
    print("%-6s %-8s %6s %9s %10s %9s %12s %10s %9s" % ("set", "tool", "round", "files", "rows", "seconds",
                                                       "rows/s", "files/s", "RSS MiB"))
    summary = []
    for name in sets:
        d = generate(name)
        files, size = dataset_facts(d)
        rows_expected = SETS[name]["files"] * SETS[name]["rows"]
        ferry_t, sqlite_t, typed_t, ferry_rss, typed_rss = [], [], [], [], []
        before_t, typed_before_t = [], []
        tools = args.tools.split(",")
        for r in range(args.rounds):
            # Rotate which tool goes first, so none always gets the warmer machine.
            order = tools[r % len(tools):] + tools[:r % len(tools)]
            for tool in order:
                if tool in ("before", "typed-before"):
                    el, rss, n, nfiles = run_ferry(d, files, name, typed=tool == "typed-before",
                                                   binary=args.before)
                    assert n == rows_expected and nfiles == len(files), (n, nfiles)
                    (typed_before_t if tool == "typed-before" else before_t).append(el)
                elif tool in ("ferry", "typed"):
                    typed = tool == "typed"
                    el, rss, n, nfiles = run_ferry(d, files, name, typed=typed)
                    assert n == rows_expected and nfiles == len(files), (n, nfiles)
                    (typed_t if typed else ferry_t).append(el)
                    (typed_rss if typed else ferry_rss).append(rss)
                else:
                    el, rss, n = run_sqlite(d, files, name)
                    assert n == rows_expected, n
                    sqlite_t.append(el)
                print("%-6s %-8s %6d %9d %10d %9.2f %12.0f %10.0f %9.1f" % (
                    name, tool, r + 1, len(files), n, el, n / el, len(files) / el, rss), flush=True)
        med = lambda v: statistics.median(v) if v else float("nan")
        summary.append((name, len(files), rows_expected, size, med(ferry_t), med(sqlite_t), med(typed_t),
                        max(ferry_rss or [0]), max(typed_rss or [0])))
        if before_t or typed_before_t:
            print("%-6s before: ferry %s rows/s (now/before %s), typed %s rows/s (now/before %s)" % (
                name,
                "%.0f" % (rows_expected / med(before_t)) if before_t else "-",
                "%.3f" % (med(before_t) / med(ferry_t)) if before_t and ferry_t else "-",
                "%.0f" % (rows_expected / med(typed_before_t)) if typed_before_t else "-",
                "%.3f" % (med(typed_before_t) / med(typed_t)) if typed_before_t and typed_t else "-"),
                flush=True)

    print()
    print("median of %d rounds" % args.rounds)
    print("%-6s %8s %10s %7s %13s %13s %13s %9s %11s %10s %10s" % (
        "set", "files", "rows", "MiB", "ferry rows/s", "typed rows/s", "sqlite rows/s", "vs sqlite",
        "typed/ferry", "ferry RSS", "typed RSS"))
    for name, nf, nr, size, fm, sm, tm, rss, trss in summary:
        print("%-6s %8d %10d %7.0f %13.0f %13.0f %13.0f %8.2fx %10.0f%% %6.0f MiB %6.0f MiB" % (
            name, nf, nr, size / 2**20, nr / fm, nr / tm, nr / sm, sm / fm, 100 * fm / tm, rss, trss))


if __name__ == "__main__":
    main()
