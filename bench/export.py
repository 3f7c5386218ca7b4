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

With `--before PATH`, a previous ferry build runs as a third contender on a spool of its own
(loaded by that build, so its ledger schema is its own), in the same alternating rounds.

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


def rows_in_spool(spool):
    db = os.path.join(spool, "ferry.db")
    if not os.path.exists(db):
        return 0
    out = subprocess.run(["sqlite3", db, "SELECT count(*) FROM vehicles"], capture_output=True, text=True)
    return int(out.stdout.strip() or 0) if out.returncode == 0 else 0


def load(expected, ferry, spool, config=None):
    """The big set in `spool` (loaded once, kept while it holds `expected` rows); `config`: a
    ferry.toml for it (typed columns)."""
    if rows_in_spool(spool) == expected:
        return
    shutil.rmtree(spool, ignore_errors=True)
    inc = os.path.join(spool, "incoming", "vehicles")
    os.makedirs(inc)
    if config:
        with open(os.path.join(spool, "ferry.toml"), "w") as fh:
            fh.write(config)
    d = ingest.generate("big")
    for f in sorted(os.listdir(d)):
        if f.endswith(".csv"):
            os.link(os.path.join(d, f), os.path.join(inc, f))
    print("loading the big set into %s ..." % spool, flush=True)
    subprocess.run([ferry, "--root", spool, "-q", "run", "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--before", help="a previous ferry build to compare, as a third contender")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    os.makedirs(WORK, exist_ok=True)
    n_expected = ingest.SETS["big"]["files"] * ingest.SETS["big"]["rows"]
    load(n_expected, FERRY, SPOOL)
    rows = rows_in_spool(SPOOL)
    assert rows == n_expected, rows
    spools = {"ferry": (FERRY, SPOOL)}
    if args.before:
        before_spool = SPOOL + "-before"
        load(n_expected, args.before, before_spool)
        assert rows_in_spool(before_spool) == n_expected
        spools["before"] = (args.before, before_spool)
    db = os.path.join(SPOOL, "ferry.db")
    out_base = os.path.join(WORK, "export-out")
    query = "SELECT %s FROM vehicles ORDER BY _id" % ", ".join(COLUMNS)

    rates = {tool: [] for tool in list(spools) + ["sqlite3"]}
    rss_max = 0.0
    tools = list(rates)
    print("export of %s rows; rounds alternate, first tool rotates" % format(rows, ","))
    for r in range(args.rounds):
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for tool in order:
            # A folder per export: ferry refuses a second target in a folder another one owns.
            out_dir = "%s-%d-%d" % (out_base, os.getpid(), r)
            shutil.rmtree(out_dir, ignore_errors=True)
            os.makedirs(out_dir)
            if tool in spools:
                binary, spool = spools[tool]
                el, rss = measured([binary, "--root", spool, "-q", "export", "vehicles", "--to", out_dir,
                                    "--target", "bench-%d-%d" % (os.getpid(), r)], stdout=subprocess.DEVNULL)
                batches = [f for f in os.listdir(out_dir) if f.endswith(".csv")]
                size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in batches)
                rates[tool].append(rows / el)
                rss_max = max(rss_max, rss)
                print("  round %d %-8s %6.2f s  %10s rows/s  %d batches, %d MiB"
                      % (r + 1, tool, el, format(int(rows / el), ","), len(batches), size >> 20), flush=True)
            else:
                target = os.path.join(out_dir, "all.csv")
                with open(target, "w") as f:
                    el, _ = measured(["sqlite3", "-csv", "-header", db, query], stdout=f)
                size = os.path.getsize(target)
                rates["sqlite3"].append(rows / el)
                print("  round %d sqlite3  %6.2f s  %10s rows/s  1 file, %d MiB"
                      % (r + 1, el, format(int(rows / el), ","), size >> 20), flush=True)
            shutil.rmtree(out_dir, ignore_errors=True)
    f, s = statistics.median(rates["ferry"]), statistics.median(rates["sqlite3"])
    print()
    print("| rows | ferry rows/s | sqlite3 rows/s | ratio | ferry peak RSS |")
    print("|---|---|---|---|---|")
    print("| %s | %s | %s | %.2f× | %.0f MiB |" % (format(rows, ","), format(int(f), ","), format(int(s), ","),
                                               f / s, rss_max))
    if "before" in rates:
        b = statistics.median(rates["before"])
        print()
        print("| ferry rows/s | previous build rows/s | now / before |")
        print("|---|---|---|")
        print("| %s | %s | %.3f |" % (format(int(f), ","), format(int(b), ","), f / b))


if __name__ == "__main__":
    main()
