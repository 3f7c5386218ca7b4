#!/usr/bin/env python3
"""Record keys: what a key costs, on SQLite and on PostgreSQL, in the same runs.

  cold      a one-file run (1,000 rows, new keys) into a keyed table holding 10 M rows, against
            the same run into an empty keyed table; and a file of 1,000 keys already stored
            (all duplicate keys). Wall time of the whole `ferry run` process and its peak RSS.
  skip      the big set (6.8 M rows, 200 files) loaded with 7 typed columns and no key, against
            the same with the key on 3 columns (`on_key = "skip"`), rounds alternating. On
            PostgreSQL also unkeyed with one writer connection: a keyed table's files are stored
            by one writer (its keys are decided by one at a time), unkeyed ones by two.
  update    the big set loaded keyed with `on_key = "update"`, `version = "registered_at"`, then
            re-sent with every tenth record changed (another price, a later registered_at): 10%
            replace their stored record, 90% are equal and stay. Against the skip load's rows/s.
  resend    40 files keyed, then the same records again with another dealer text (new files,
            every key stored: all duplicate keys). Against the first load's rows/s.

  python3 bench/keys.py                       # both stores, 2 rounds of skip
  python3 bench/keys.py --store sqlite --rounds 3
  python3 bench/keys.py --parts cold,resend
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest import DATA, FERRY, REPO, SETS, TYPED_CONFIG, WORK, dataset_facts, generate, run_measured  # noqa: E402
from postgres import Server, fresh_db, psql  # noqa: E402

KEY_LINE = 'key = ["vin", "make", "year"]\n'
assert KEY_LINE in TYPED_CONFIG
CONFIGS = {
    "unkeyed": TYPED_CONFIG.replace(KEY_LINE, ""),
    "skip": TYPED_CONFIG,
    "update": TYPED_CONFIG.replace(KEY_LINE, KEY_LINE + 'on_key = "update"\nversion = "registered_at"\n'),
    # PostgreSQL: a keyed table's files are stored by one writer (its keys are decided by one
    # writer at a time); unkeyed ones by two. This is unkeyed with one, for the key's own cost.
    "unkeyed-1w": "[store]\nwriters = 1\n" + TYPED_CONFIG.replace(KEY_LINE, ""),
}
HEADER = "vin,make,model,year,price,registered_at,dealer\n"
MAKES = ["Volvo", "Toyota", "Volkswagen", "Ford", "Tesla", "BMW", "Škoda", "Renault", "Kia", "Hyundai"]
TEN_M = {"files": 100, "rows": 100_000}


class Store:
    """Where a run's records go: a spool's own SQLite file, or a fresh PostgreSQL database."""

    def __init__(self, kind, url=None):
        self.kind, self.url = kind, url

    def fresh(self, spool, config, db="bench_keys"):
        shutil.rmtree(spool, ignore_errors=True)
        os.makedirs(os.path.join(spool, "incoming", "vehicles"))
        with open(os.path.join(spool, "ferry.toml"), "w") as fh:
            fh.write(CONFIGS[config])
        self.db = fresh_db(self.url, db) if self.kind == "postgres" else None

    def cmd(self, spool):
        store = ["--store", self.db] if self.db else []
        return [FERRY, "--root", spool, *store, "-q", "run", "--no-progress"]

    def query(self, spool, sql):
        if self.db:
            return psql(self.db, sql)
        return subprocess.run(["sqlite3", os.path.join(spool, "ferry.db"), sql], capture_output=True, text=True,
                              check=True).stdout.strip()

    def drop(self):
        if self.kind == "postgres":
            psql(self.url, "DROP DATABASE IF EXISTS bench_keys")


def link_in(spool, d, files):
    inc = os.path.join(spool, "incoming", "vehicles")
    for f in files:
        os.link(os.path.join(d, f), os.path.join(inc, f))


def run(store, spool):
    return run_measured(store.cmd(spool), stdout=subprocess.DEVNULL)


def write_file(path, rows):
    with open(path + ".tmp", "w") as fh:
        fh.write(HEADER)
        fh.writelines(rows)
    old = time.time() - 3600
    os.utime(path + ".tmp", (old, old))
    os.rename(path + ".tmp", path)


def simple_row(prefix, i):
    return "%s%015d,%s,M-%d,%d,%d.%02d,2024-%02d-%02dT10:00:00Z,Dealer %d\n" % (
        prefix, i, MAKES[i % 10], i % 97, 1995 + i % 32, 1000 + i % 90000, i % 100, 1 + i % 12, 1 + i % 28, i % 500)


def ten_million():
    d = os.path.join(DATA, "keys-10m")
    if os.path.exists(os.path.join(d, ".complete")):
        return d
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    n = 0
    for f in range(TEN_M["files"]):
        write_file(os.path.join(d, "stored-%05d.csv" % f), [simple_row("S", n + i) for i in range(TEN_M["rows"])])
        n += TEN_M["rows"]
    open(os.path.join(d, ".complete"), "w").close()
    return d


def one_file(spool, name, prefix, first):
    write_file(os.path.join(spool, "incoming", "vehicles", name), [simple_row(prefix, first + i) for i in range(1000)])


def cold(store, rounds):
    """One 1,000-row file into an empty keyed table and into one of 10 M rows."""
    big = ten_million()
    files, _ = dataset_facts(big)
    full = os.path.join(WORK, "keys-full")
    store.fresh(full, "skip")
    link_in(full, big, files)
    el, rss = run(store, full)
    stored = int(store.query(full, "SELECT count(*) FROM vehicles"))
    assert stored == TEN_M["files"] * TEN_M["rows"], stored
    print("  loaded %d keyed rows in %.1f s (%.0f rows/s, peak RSS %.0f MiB)" % (stored, el, stored / el, rss),
          flush=True)
    full_db = store.db
    out = {"empty": [], "10M new": [], "10M stored": []}
    rss_of = {k: 0.0 for k in out}
    for r in range(rounds):
        # Empty: a fresh store each time.
        empty = os.path.join(WORK, "keys-empty")
        store.fresh(empty, "skip", db="bench_keys_empty")
        one_file(empty, "new.csv", "N%02d" % r, 0)
        el, rss = run(store, empty)
        assert int(store.query(empty, "SELECT count(*) FROM vehicles")) == 1000
        out["empty"].append(el)
        rss_of["empty"] = max(rss_of["empty"], rss)
        print("  round %d  empty table, 1,000 new keys        %6.3f s  %6.0f MiB" % (r + 1, el, rss), flush=True)
        store.db = full_db
        one_file(full, "new-%02d.csv" % r, "N%02d" % r, 0)
        el, rss = run(store, full)
        out["10M new"].append(el)
        rss_of["10M new"] = max(rss_of["10M new"], rss)
        print("  round %d  10 M-row table, 1,000 new keys     %6.3f s  %6.0f MiB" % (r + 1, el, rss), flush=True)
        # Keys spread over the whole table: every one already stored.
        step = stored // 1000
        write_file(os.path.join(full, "incoming", "vehicles", "again-%02d.csv" % r),
                   [simple_row("S", i * step + r).replace("Dealer", "Again %d" % r) for i in range(1000)])
        el, rss = run(store, full)
        out["10M stored"].append(el)
        rss_of["10M stored"] = max(rss_of["10M stored"], rss)
        print("  round %d  10 M-row table, 1,000 stored keys  %6.3f s  %6.0f MiB" % (r + 1, el, rss), flush=True)
    total = int(store.query(full, "SELECT count(*) FROM vehicles"))
    dups = int(store.query(full, "SELECT coalesce(sum(duplicate_records), 0) FROM files"))
    assert total == stored + 1000 * rounds and dups == 1000 * rounds, (total, dups)
    shutil.rmtree(full, ignore_errors=True)
    shutil.rmtree(os.path.join(WORK, "keys-empty"), ignore_errors=True)
    if store.kind == "postgres":
        psql(store.url, "DROP DATABASE IF EXISTS bench_keys_empty")
    return {k: (statistics.median(v), rss_of[k]) for k, v in out.items()}


def big_load(store, d, files, config):
    spool = os.path.join(WORK, "keys-big")
    store.fresh(spool, config)
    link_in(spool, d, files)
    el, rss = run(store, spool)
    n = int(store.query(spool, "SELECT count(*) FROM vehicles"))
    return spool, el, rss, n


def skip(store, rounds):
    d = generate("big")
    files, _ = dataset_facts(d)
    want = SETS["big"]["files"] * SETS["big"]["rows"]
    configs = ["unkeyed", "skip"] + (["unkeyed-1w"] if store.kind == "postgres" else [])
    times = {c: [] for c in configs}
    rss_of = {c: 0.0 for c in configs}
    for r in range(rounds):
        for config in configs[r % len(configs):] + configs[:r % len(configs)]:
            spool, el, rss, n = big_load(store, d, files, config)
            assert n == want, (config, n)
            shutil.rmtree(spool, ignore_errors=True)
            times[config].append(el)
            rss_of[config] = max(rss_of[config], rss)
            print("  round %d  %-10s %6.2f s  %10.0f rows/s  %5.0f MiB" % (r + 1, config, el, n / el, rss), flush=True)
    return {k: (want / statistics.median(v), rss_of[k]) for k, v in times.items()}


def changed_set(d, files):
    """The big set again: every tenth record another price and a later registered_at."""
    out = os.path.join(DATA, "keys-changed")
    if os.path.exists(os.path.join(out, ".complete")):
        return out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for f in files:
        with open(os.path.join(d, f)) as fh:
            lines = fh.readlines()
        for i in range(1, len(lines), 10):
            vin, make, model, year, price, ts, rest = lines[i].split(",", 6)
            later = str(int(ts[:4]) + 1) + ts[4:]
            lines[i] = ",".join([vin, make, model, year, price[:-1] + "9", later, rest])
        write_file(os.path.join(out, f), lines[1:])
    open(os.path.join(out, ".complete"), "w").close()
    return out


def update(store):
    d = generate("big")
    files, _ = dataset_facts(d)
    want = SETS["big"]["files"] * SETS["big"]["rows"]
    changed = changed_set(d, files)
    spool, first, _, n = big_load(store, d, files, "update")
    assert n == want
    print("  first load (update, empty table) %6.2f s  %10.0f rows/s" % (first, want / first), flush=True)
    link_in(spool, changed, files)
    el, rss = run(store, spool)
    n = int(store.query(spool, "SELECT count(*) FROM vehicles"))
    updated = int(store.query(spool, "SELECT coalesce(sum(updated_records), 0) FROM files"))
    dups = int(store.query(spool, "SELECT coalesce(sum(duplicate_records), 0) FROM files"))
    assert n == want, n
    assert updated == want // 10 and dups == want - want // 10, (updated, dups)
    print("  re-sent, 10%% changed             %6.2f s  %10.0f rows/s  %5.0f MiB  (%d updated, %d equal)" % (
        el, want / el, rss, updated, dups), flush=True)
    shutil.rmtree(spool, ignore_errors=True)
    return want / first, want / el, rss


def resend(store, limit=40):
    d = generate("big")
    files, _ = dataset_facts(d)
    files = files[:limit]
    again = os.path.join(DATA, "keys-resend")
    if not os.path.exists(os.path.join(again, ".complete")):
        os.makedirs(again, exist_ok=True)
        for f in files:
            with open(os.path.join(d, f)) as i:
                write_file(os.path.join(again, f), [l.replace("contact sales desk", "call the desk") for l in i][1:])
        open(os.path.join(again, ".complete"), "w").close()
    spool = os.path.join(WORK, "keys-resend")
    store.fresh(spool, "skip")
    link_in(spool, d, files)
    first, _ = run(store, spool)
    link_in(spool, again, files)
    el, rss = run(store, spool)
    rows = int(store.query(spool, "SELECT count(*) FROM vehicles"))
    dups = int(store.query(spool, "SELECT coalesce(sum(duplicate_records), 0) FROM files"))
    assert dups == rows == limit * SETS["big"]["rows"], (rows, dups)
    print("  %d rows: first load %6.2f s, re-sent (every key stored) %6.2f s" % (rows, first, el), flush=True)
    shutil.rmtree(spool, ignore_errors=True)
    return rows / first, rows / el


def bench(store, parts, rounds):
    res = {}
    if "cold" in parts:
        print("cold: one 1,000-row file", flush=True)
        res["cold"] = cold(store, rounds)
    if "skip" in parts:
        print("skip: the big set, typed, unkeyed and keyed", flush=True)
        res["skip"] = skip(store, rounds)
    if "update" in parts:
        print("update: the big set re-sent with 10% changed", flush=True)
        res["update"] = update(store)
    if "resend" in parts:
        print("resend: 40 files, then every key again", flush=True)
        res["resend"] = resend(store)
    store.drop()
    return res


def report(kind, res):
    print()
    print("== %s ==" % kind)
    if "cold" in res:
        c = res["cold"]
        e = c["empty"][0]
        for k, (t, m) in c.items():
            print("  one file, %-11s %6.3f s  %4.2fx empty  peak RSS %4.0f MiB" % (k, t, t / e, m))
    if "skip" in res:
        (u, um), (s, sm) = res["skip"]["unkeyed"], res["skip"]["skip"]
        print("  big set unkeyed %10.0f rows/s (%.0f MiB); keyed skip %10.0f rows/s (%.0f MiB): %.0f%%" % (
            u, um, s, sm, 100 * s / u))
        if "unkeyed-1w" in res["skip"]:
            w, _ = res["skip"]["unkeyed-1w"]
            print("  big set unkeyed with one writer %10.0f rows/s: keyed skip is %.0f%% of it" % (w, 100 * s / w))
    if "update" in res:
        first, again, m = res["update"]
        base = res["skip"]["skip"][0] if "skip" in res else first
        print("  update: first load %10.0f rows/s; re-sent 10%% changed %10.0f rows/s = %.0f%% of the skip load "
              "(%.0f MiB)" % (first, again, 100 * again / base, m))
    if "resend" in res:
        first, again = res["resend"]
        print("  resend: first %10.0f rows/s; every key stored %10.0f rows/s = %.0f%%" % (first, again,
                                                                                           100 * again / first))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--parts", default="cold,skip,update,resend")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--url", help="an existing PostgreSQL server (databases bench_keys* are created and dropped)")
    args = ap.parse_args()
    if not os.path.exists(FERRY):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    os.makedirs(WORK, exist_ok=True)
    parts = args.parts.split(",")
    print("machine: %d CPUs" % os.cpu_count())
    results = []
    if args.store in ("sqlite", "both"):
        print("\n--- SQLite ---")
        results.append(("SQLite", bench(Store("sqlite"), parts, args.rounds)))
    if args.store in ("postgres", "both"):
        server = None if args.url else Server()
        try:
            url = args.url or server.url
            print("\n--- PostgreSQL %s ---" % psql(url, "SHOW server_version"))
            results.append(("PostgreSQL", bench(Store("postgres", url), parts, args.rounds)))
        finally:
            if server:
                server.stop()
    for kind, res in results:
        report(kind, res)


if __name__ == "__main__":
    main()
