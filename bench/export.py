#!/usr/bin/env python3
"""ferry export benchmark: `ferry export` vs `sqlite3 -csv` on the same table.

Loads the big set of bench/ingest.py (6.8 M rows, generated once into bench/data) into a spool
once (cached under bench/work/export-spool), then alternates:

  ferry    `ferry export vehicles --to DIR --target roundN`: CSV batches of 100,000 rows, each
           written under a temp name, fsynced, renamed, the folder fsynced, then a manifest
           (SHA-256 of the file) and a done marker, and the watermark committed — all on
  sqlite3  `sqlite3 -csv -header ferry.db "SELECT <columns> FROM vehicles ORDER BY _id" > FILE`
           (one file, no fsync, no hash)

and prints rows/s for each, the ratio, and ferry's peak RSS.

  python3 bench/export.py              # 3 rounds
  python3 bench/export.py --rounds 5
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import ingest  # noqa: E402  (the data generator)

FERRY = os.path.join(REPO, "target", "release", "ferry")
WORK = os.path.join(HERE, "work")
SPOOL = os.path.join(WORK, "export-spool")
COLUMNS = ["vin", "make", "model", "year", "price", "registered_at", "dealer"]


def measured(cmd, **kw):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.monotonic()
    subprocess.run(cmd, check=True, **kw)
    el = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return el, max(before, after) / 1024.0


def rows_in_spool():
    db = os.path.join(SPOOL, "ferry.db")
    if not os.path.exists(db):
        return 0
    out = subprocess.run(["sqlite3", db, "SELECT count(*) FROM vehicles"], capture_output=True, text=True)
    return int(out.stdout.strip() or 0) if out.returncode == 0 else 0


def load(expected):
    if rows_in_spool() == expected:
        return
    shutil.rmtree(SPOOL, ignore_errors=True)
    inc = os.path.join(SPOOL, "incoming", "vehicles")
    os.makedirs(inc)
    d = ingest.generate("big")
    for f in sorted(os.listdir(d)):
        if f.endswith(".csv"):
            os.link(os.path.join(d, f), os.path.join(inc, f))
    print("loading the big set into %s ..." % SPOOL, flush=True)
    subprocess.run([FERRY, "--root", SPOOL, "-q", "run", "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    os.makedirs(WORK, exist_ok=True)
    n_expected = ingest.SETS["big"]["files"] * ingest.SETS["big"]["rows"]
    load(n_expected)
    rows = rows_in_spool()
    assert rows == n_expected, rows
    db = os.path.join(SPOOL, "ferry.db")
    out_dir = os.path.join(WORK, "export-out")
    query = "SELECT %s FROM vehicles ORDER BY _id" % ", ".join(COLUMNS)

    ferry_rates, sqlite_rates, rss_max = [], [], 0.0
    print("export of %s rows; rounds alternate, first tool rotates" % format(rows, ","))
    for r in range(args.rounds):
        order = ["ferry", "sqlite3"] if r % 2 == 0 else ["sqlite3", "ferry"]
        for tool in order:
            shutil.rmtree(out_dir, ignore_errors=True)
            os.makedirs(out_dir)
            if tool == "ferry":
                el, rss = measured([FERRY, "--root", SPOOL, "-q", "export", "vehicles", "--to", out_dir,
                                    "--target", "bench-%d-%d" % (os.getpid(), r)], stdout=subprocess.DEVNULL)
                batches = [f for f in os.listdir(out_dir) if f.endswith(".csv")]
                size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in batches)
                ferry_rates.append(rows / el)
                rss_max = max(rss_max, rss)
                print("  round %d ferry    %6.2f s  %10s rows/s  %d batches, %d MiB"
                      % (r + 1, el, format(int(rows / el), ","), len(batches), size >> 20), flush=True)
            else:
                target = os.path.join(out_dir, "all.csv")
                with open(target, "w") as f:
                    el, _ = measured(["sqlite3", "-csv", "-header", db, query], stdout=f)
                size = os.path.getsize(target)
                sqlite_rates.append(rows / el)
                print("  round %d sqlite3  %6.2f s  %10s rows/s  1 file, %d MiB"
                      % (r + 1, el, format(int(rows / el), ","), size >> 20), flush=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    f, s = statistics.median(ferry_rates), statistics.median(sqlite_rates)
    print()
    print("| rows | ferry rows/s | sqlite3 rows/s | ratio | ferry peak RSS |")
    print("|---|---|---|---|---|")
    print("| %s | %s | %s | %.2f× | %.0f MiB |" % (format(rows, ","), format(int(f), ","), format(int(s), ","),
                                               f / s, rss_max))


if __name__ == "__main__":
    main()
