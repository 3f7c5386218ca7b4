#!/usr/bin/env python3
"""ferry on the same rows as CSV, XML and fixed-width; and an Excel workbook of 100k rows.

The big set of bench/ingest.py (200 files, 6.8 M rows) is converted once to XML (one element per
record, one child per column) and to fixed-width (each column padded to its widest value, in
characters), cached in bench/data/. Each round loads all three into fresh spools, in rotating
order; the table gives rows/s per format and its share of CSV's (median of rounds). Every
contender runs zero-config except fixed-width, which needs its layout (string columns).

    python3 bench/formats.py                 # 3 rounds
    python3 bench/formats.py --rounds 5 --formats csv,fixed
"""
import argparse
import csv
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
from xml.sax.saxutils import escape

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures", "formats"))
import ingest  # noqa: E402
from generate import workbook  # noqa: E402

COLUMNS = ["vin", "make", "model", "year", "price", "registered_at", "dealer"]


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.reader(f)
        next(r)
        yield from r


def convert(src, fmt, widths=None):
    """The set in another format, cached next to it."""
    d = os.path.join(ingest.DATA, "big-" + fmt)
    stamp = os.path.join(d, ".complete")
    if os.path.exists(stamp):
        return d
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name in sorted(f for f in os.listdir(src) if f.endswith(".csv")):
        out = os.path.join(d, name[:-4] + (".xml" if fmt == "xml" else ".txt"))
        with open(out, "w", encoding="utf-8") as fh:
            if fmt == "xml":
                fh.write('<?xml version="1.0" encoding="UTF-8"?>\n<vehicles>\n')
                for row in read_rows(os.path.join(src, name)):
                    cells = "".join(f"<{c}>{escape(v)}</{c}>" for c, v in zip(COLUMNS, row))
                    fh.write(f"<vehicle>{cells}</vehicle>\n")
                fh.write("</vehicles>\n")
            else:
                for row in read_rows(os.path.join(src, name)):
                    fh.write("".join(v.ljust(w) for v, w in zip(row, widths)) + "\n")
    old = dt.datetime.now().timestamp() - 3600
    for fn in os.listdir(d):
        os.utime(os.path.join(d, fn), (old, old))
    open(stamp, "w").close()
    return d


def widths_of(src):
    path = os.path.join(ingest.DATA, "big-widths.txt")
    if os.path.exists(path):
        return [int(x) for x in open(path).read().split()]
    w = [0] * len(COLUMNS)
    for name in os.listdir(src):
        if name.endswith(".csv"):
            for row in read_rows(os.path.join(src, name)):
                w = [max(a, len(v)) for a, v in zip(w, row)]
    open(path, "w").write(" ".join(map(str, w)))
    return w


def fixed_config(widths):
    cols, start = [], 1
    for c, w in zip(COLUMNS, widths):
        cols.append(f'  {{ name = "{c}", start = {start}, width = {w} }},')
        start += w
    return ('[[dataset]]\nname = "vehicles"\nformat = "fixed"\ncolumns = [\n'
            + "\n".join(cols) + "\n]\n")


def run(fmt, d, config=None, table="vehicles"):
    spool = os.path.join(ingest.WORK, "formats-" + fmt)
    shutil.rmtree(spool, ignore_errors=True)
    inc = os.path.join(spool, "incoming", "vehicles")
    os.makedirs(inc)
    if config:
        open(os.path.join(spool, "ferry.toml"), "w").write(config)
    files = sorted(f for f in os.listdir(d) if not f.startswith("."))
    for f in files:
        os.link(os.path.join(d, f), os.path.join(inc, f))
    el, rss = ingest.run_measured([ingest.FERRY, "--root", spool, "-q", "run", "--no-progress"],
                                  stdout=subprocess.DEVNULL)
    out = subprocess.run(["sqlite3", os.path.join(spool, "ferry.db"),
                          f"select count(*) from {table}; "
                          "select count(*) from files where state='ingested';"],
                         capture_output=True, text=True, check=True).stdout.split()
    shutil.rmtree(spool, ignore_errors=True)
    rows, ingested = int(out[0]), int(out[1])
    if ingested != len(files):
        raise SystemExit(f"{fmt}: {ingested} of {len(files)} files ingested")
    return el, rss, rows


def excel(src, rows=100_000):
    """A 100k-row workbook of the same rows (numbers as numbers, the datetime as a date cell),
    and the same rows as one CSV, each loaded twice; rows/s of each."""
    d = os.path.join(ingest.DATA, "xlsx-100k")
    book = os.path.join(d, "vehicles.xlsx")
    same = os.path.join(d, "csv", "vehicles.csv")
    if not os.path.exists(book):
        os.makedirs(os.path.join(d, "csv"), exist_ok=True)
        table = [COLUMNS]
        with open(same, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(COLUMNS)
            for name in sorted(os.listdir(src)):
                if not name.endswith(".csv"):
                    continue
                for r in read_rows(os.path.join(src, name)):
                    when = dt.datetime.strptime(r[5], "%Y-%m-%dT%H:%M:%SZ")
                    table.append([r[0], r[1], r[2], int(r[3]), float(r[4]), when, r[6]])
                    w.writerow(r[:5] + [when.strftime("%Y-%m-%dT%H:%M:%S")] + r[6:])
                    if len(table) > rows:
                        break
                if len(table) > rows:
                    break
        workbook(book, [("Vehicles", table)])
    results = {}
    for fmt, path in (("xlsx", book), ("csv", same)):
        one = os.path.join(d, "one-" + fmt)
        shutil.rmtree(one, ignore_errors=True)
        os.makedirs(one)
        os.link(path, os.path.join(one, os.path.basename(path)))
        best = min(run(fmt + "-100k", one)[0] for _ in range(2))
        results[fmt] = best
        shutil.rmtree(one, ignore_errors=True)
    return results, os.path.getsize(book)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--formats", default="csv,xml,fixed")
    ap.add_argument("--no-excel", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(ingest.FERRY):
        subprocess.run(["cargo", "build", "--release"], cwd=ingest.REPO, check=True)
    src = ingest.generate("big")
    widths = widths_of(src)
    dirs = {"csv": (src, None), "xml": (convert(src, "xml"), None),
            "fixed": (convert(src, "fixed", widths), fixed_config(widths))}
    fmts = args.formats.split(",")
    results = {f: [] for f in fmts}
    for r in range(args.rounds):
        order = fmts[r % len(fmts):] + fmts[:r % len(fmts)]
        for f in order:
            el, rss, rows = run(f, *dirs[f])
            results[f].append((rows / el, rss, rows))
            print(f"round {r + 1}: {f:6s} {rows:,} rows in {el:.1f} s = {rows / el:,.0f} rows/s, "
                  f"peak RSS {rss:.0f} MiB", file=sys.stderr)
    size = lambda d: sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)) / 2**20
    base = statistics.median(x[0] for x in results["csv"]) if "csv" in results else None
    print("| format | input MiB | rows | rows/s (median) | share of CSV | peak RSS |")
    print("|---|---|---|---|---|---|")
    for f in fmts:
        med = statistics.median(x[0] for x in results[f])
        share = f"{med / base:.0%}" if base else "-"
        print(f"| {f} | {size(dirs[f][0]):,.0f} | {results[f][0][2]:,} | {med:,.0f} | {share} | "
              f"{max(x[1] for x in results[f]):.0f} MiB |")
    if not args.no_excel:
        (t, book_size) = excel(src)
        print(f"\nExcel: 100,000 rows in one workbook ({book_size / 2**20:.1f} MiB): "
              f"{100_000 / t['xlsx']:,.0f} rows/s; the same rows as one CSV: "
              f"{100_000 / t['csv']:,.0f} rows/s")


if __name__ == "__main__":
    main()
