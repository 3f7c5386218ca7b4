#!/usr/bin/env python3
"""Parquet export benchmark: `ferry export --format parquet` against the script a user would
write (Python: sqlite3 → pyarrow → ParquetWriter, zstd) and against ferry's own CSV export, on
the same typed table.

Loads the big set of bench/ingest.py (6.8 M rows) typed — vin, make, model text; year int;
price decimal(scale 2); registered_at datetime; dealer text — into a spool once (cached under
bench/work/parquet-spool), then alternates:

  parquet   `ferry export vehicles --format parquet`: batches of 100,000 rows (zstd), each
            fsynced and renamed, a manifest with its SHA-256 and Parquet schema, a done marker,
            the watermark committed per batch
  csv       `ferry export vehicles` (CSV batches, the same protocol)
  pyarrow   sqlite3 → pyarrow arrays in the same Parquet types (decimal128(38, 2), timestamp[us,
            UTC], int64, string; _id, _file_id, _line too) → pq.ParquetWriter, zstd, 100,000 rows
            a batch into one file (no fsync, no hash, no manifest)

and prints rows/s for each, the ratios, the files' sizes and ferry's peak RSS.
With `--s3`, also `parquet-s3`: the same Parquet export to a `[[target]]` in a throwaway
SeaweedFS on 127.0.0.1 (needs `weed`, which ./test --deps installs, and boto3).
  python3 bench/export_parquet.py              # 3 rounds
  python3 bench/export_parquet.py --rounds 2 --s3
"""

import argparse
import datetime
import decimal
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import ingest  # noqa: E402  (the data generator)
from export import load, rows_in_spool  # noqa: E402
from ingest import TYPED_CONFIG, run_measured  # noqa: E402

FERRY = os.path.join(REPO, "target", "release", "ferry")
WORK = os.path.join(HERE, "work")
SPOOL = os.path.join(WORK, "parquet-spool")
CONFIG = TYPED_CONFIG.replace('key = ["vin", "make", "year"]\n', "")
COLUMNS = ["_id", "_file_id", "_line", "vin", "make", "model", "year", "price", "registered_at", "dealer"]


def pyarrow_export(db, path):
    """What a user would write: read the table in batches, build typed arrays, write Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("_id", pa.int64()), ("_file_id", pa.int64()), ("_line", pa.int64()),
        ("vin", pa.string()), ("make", pa.string()), ("model", pa.string()), ("year", pa.int64()),
        ("price", pa.decimal128(38, 2)), ("registered_at", pa.timestamp("us", tz="UTC")),
        ("dealer", pa.string()),
    ])
    con = sqlite3.connect(db)
    cur = con.execute("SELECT %s FROM vehicles ORDER BY _id" % ", ".join(COLUMNS))
    D = decimal.Decimal
    parse = datetime.datetime.fromisoformat
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        while True:
            rows = cur.fetchmany(100_000)
            if not rows:
                break
            cols = list(zip(*rows))
            arrays = [
                pa.array(cols[0], pa.int64()), pa.array(cols[1], pa.int64()), pa.array(cols[2], pa.int64()),
                pa.array(cols[3], pa.string()), pa.array(cols[4], pa.string()), pa.array(cols[5], pa.string()),
                pa.array(cols[6], pa.int64()),
                pa.array([None if v is None else D(v) for v in cols[7]], pa.decimal128(38, 2)),
                pa.array([None if v is None else parse(v) for v in cols[8]], pa.timestamp("us", tz="UTC")),
                pa.array(cols[9], pa.string()),
            ]
            w.write_table(pa.Table.from_arrays(arrays, schema=schema))
    con.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--s3", action="store_true", help="also export to a SeaweedFS bucket")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    os.makedirs(WORK, exist_ok=True)
    n_expected = ingest.SETS["big"]["files"] * ingest.SETS["big"]["rows"]
    load(n_expected, FERRY, SPOOL, CONFIG)
    rows = rows_in_spool(SPOOL)
    assert rows == n_expected, rows
    db = os.path.join(SPOOL, "ferry.db")
    out_base = os.path.join(WORK, "parquet-out")
    tools = ["parquet", "csv", "pyarrow"]
    s3 = None
    if args.s3:
        import remote_s3
        s3 = remote_s3.Seaweed()
        with open(os.path.join(SPOOL, "ferry.toml"), "w") as fh:
            fh.write(CONFIG + '[[target]]\nname = "bucket"\nurl = "s3://%s/out"\nendpoint = "%s"\n'
                     % (remote_s3.BUCKET, s3.endpoint))
        tools.append("parquet-s3")
    rates = {t: [] for t in tools}
    sizes = {}
    rss = {t: 0.0 for t in tools}
    print("export of %s rows; rounds alternate, first tool rotates" % format(rows, ","))
    for r in range(args.rounds):
        for tool in tools[r % len(tools):] + tools[:r % len(tools)]:
            out_dir = "%s-%s-%d-%d" % (out_base, tool, os.getpid(), r)
            shutil.rmtree(out_dir, ignore_errors=True)
            os.makedirs(out_dir)
            target = "bench-%s-%d-%d" % (tool, os.getpid(), r)
            if tool == "pyarrow":
                # In a fresh interpreter: its own time and peak RSS, as a user's script runs.
                path = os.path.join(out_dir, "all.parquet")
                el, peak = run_measured([sys.executable, "-c", "import sys; sys.path.insert(0, %r); "
                                         "import export_parquet as e; e.pyarrow_export(%r, %r)"
                                         % (HERE, db, path)])
                files = [path]
            else:
                fmt = "csv" if tool == "csv" else "parquet"
                cmd = [FERRY, "--root", SPOOL, "-q", "export", "vehicles", "--format", fmt]
                if tool == "parquet-s3":
                    # The bucket's target, its watermark reset so every round sends everything.
                    subprocess.run(["sqlite3", db, "DELETE FROM export_batches WHERE target = 'bucket'; "
                                    "DELETE FROM exports WHERE target = 'bucket'"], check=True)
                    cmd += ["--target", "bucket"]
                else:
                    cmd += ["--to", out_dir, "--target", target]
                el, peak = run_measured(cmd, stdout=subprocess.DEVNULL,
                                        env=remote_s3.env() if tool == "parquet-s3" else None)
                files = [os.path.join(out_dir, f) for f in os.listdir(out_dir) if f.endswith("." + fmt)]
            size = sum(os.path.getsize(f) for f in files)
            if files:
                sizes[tool] = size
            rates[tool].append(rows / el)
            rss[tool] = max(rss[tool], peak)
            print("  round %d %-10s %6.2f s  %10s rows/s  %d files, %d MiB, peak RSS %.0f MiB"
                  % (r + 1, tool, el, format(int(rows / el), ","), len(files), size >> 20, peak), flush=True)
            shutil.rmtree(out_dir, ignore_errors=True)
    med = {t: statistics.median(v) for t, v in rates.items()}
    print()
    print("| contender | rows/s | files MiB | peak RSS |")
    print("|---|---|---|---|")
    for t in tools:
        print("| %s | %s | %s | %s |" % (t, format(int(med[t]), ","),
                                        (sizes.get(t, 0) >> 20) if t in sizes else "-",
                                        ("%.0f MiB" % rss[t]) if rss[t] else "-"))
    print()
    print("ferry Parquet / pyarrow script: %.2f×   (target ≥ 2×)" % (med["parquet"] / med["pyarrow"]))
    print("ferry Parquet / ferry CSV:      %.2f×   (target ≥ 0.8×)" % (med["parquet"] / med["csv"]))
    print("Parquet size / CSV size:        %.2f" % (sizes["parquet"] / sizes["csv"]))
    if s3:
        print("Parquet to S3 / to a folder:    %.2f×   (target ≥ 0.7×)" % (med["parquet-s3"] / med["parquet"]))
        s3.stop()


if __name__ == "__main__":
    main()
