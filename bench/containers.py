#!/usr/bin/env python3
"""Containers benchmark: one ~1 GiB CSV loaded plain, inside a zip, and inside an OpenPGP file
(encrypted to ferry's key and signed by the partner's, as GnuPG writes it by default: RSA 3072,
AES-256, ZLIB-compressed), against `gpg --decrypt` followed by `ferry run` — the cron script a
team writes — in the same rounds.

The CSV is the big set of bench/ingest.py (6.8 M rows) as one file; the zip is Python's
zipfile (deflate, level 6, as `zip` writes); keys and the .pgp file are made by GnuPG in a
throwaway home under bench/work/containers. Every contender is a whole `ferry run` (SQLite,
zero-config dataset) on a fresh spool with the input hard-linked into incoming/vehicles/; the
gpg+run contender is `gpg --decrypt` into incoming/ plus that run. Prints rows/s, the ratios the
issue names, and ferry's peak RSS.

  python3 bench/containers.py              # 3 rounds
  python3 bench/containers.py --rounds 1
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import ingest  # noqa: E402  (the data generator)
from ingest import run_measured  # noqa: E402

FERRY = os.path.join(REPO, "target", "release", "ferry")
WORK = os.path.join(HERE, "work", "containers")
GNUPG = os.path.join(WORK, "gnupg")


def gpg(*args, **kw):
    env = dict(os.environ, GNUPGHOME=GNUPG)
    return subprocess.run(["gpg", "--batch", "--yes", "--quiet", "--trust-model", "always",
                           "--pinentry-mode", "loopback", *args], env=env, check=True, **kw)


def prepare():
    """The inputs, made once: one.csv, one.zip, one.csv.pgp and the keys."""
    os.makedirs(WORK, exist_ok=True)
    stamp = os.path.join(WORK, ".complete")
    csv, zp, pgp = (os.path.join(WORK, n) for n in ("one.csv", "one.zip", "one.csv.pgp"))
    if os.path.exists(stamp):
        return csv, zp, pgp
    d = ingest.generate("big")
    files, _ = ingest.dataset_facts(d)
    t = time.time()
    with open(csv, "wb") as out:
        for i, f in enumerate(files):
            with open(os.path.join(d, f), "rb") as fh:
                data = fh.read()
            out.write(data if i == 0 else data[data.index(b"\n") + 1:])
    with zipfile.ZipFile(zp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        z.write(csv, "one.csv")
    shutil.rmtree(GNUPG, ignore_errors=True)
    os.makedirs(GNUPG, mode=0o700)
    for uid in ("ferry@bench", "partner@bench"):
        gpg("--passphrase", "", "--quick-gen-key", uid, "default", "default", "never")
    with open(os.path.join(WORK, "ferry.sec.asc"), "wb") as fh:
        fh.write(gpg("--passphrase", "", "--armor", "--export-secret-keys", "ferry@bench",
                     capture_output=True).stdout)
    with open(os.path.join(WORK, "partner.pub"), "wb") as fh:
        fh.write(gpg("--export", "partner@bench", capture_output=True).stdout)
    gpg("-r", "ferry@bench", "-u", "partner@bench", "--sign", "--encrypt", "--output", pgp, csv)
    old = time.time() - 3600
    for p in (csv, zp, pgp):
        os.utime(p, (old, old))
    open(stamp, "w").close()
    print("prepared the inputs in %.0f s: csv %d MiB, zip %d MiB, pgp %d MiB" % (
        time.time() - t, os.path.getsize(csv) >> 20, os.path.getsize(zp) >> 20, os.path.getsize(pgp) >> 20),
        file=sys.stderr)
    return csv, zp, pgp


CONFIG = """
[unpack]
pgp_secret_key = "%s/ferry.sec.asc"
pgp_verify_key = "%s/partner.pub"
""" % (WORK, WORK)


def spool_with(name, src=None):
    spool = os.path.join(WORK, "spool-" + name)
    shutil.rmtree(spool, ignore_errors=True)
    inc = os.path.join(spool, "incoming", "vehicles")
    os.makedirs(inc)
    with open(os.path.join(spool, "ferry.toml"), "w") as fh:
        fh.write(CONFIG)
    if src:
        os.link(src, os.path.join(inc, os.path.basename(src)))
    return spool, inc


def stored(spool):
    out = subprocess.run(["sqlite3", os.path.join(spool, "ferry.db"),
                          "select count(*) from vehicles; select count(*) from files where state='quarantined';"],
                         capture_output=True, text=True, check=True).stdout.split()
    if int(out[1]) != 0:
        raise SystemExit("a file was quarantined in %s" % spool)
    return int(out[0])


def ferry_run(spool):
    return run_measured([FERRY, "--root", spool, "-q", "run", "--no-progress"], stdout=subprocess.DEVNULL)


def contender(name, src):
    spool, _ = spool_with(name, src)
    el, rss = ferry_run(spool)
    n = stored(spool)
    shutil.rmtree(spool, ignore_errors=True)
    return el, rss, n


def gpg_then_run(pgp):
    spool, inc = spool_with("gpg")
    t = time.perf_counter()
    with open(os.path.join(inc, "one.csv"), "wb") as out:
        gpg("--decrypt", pgp, stdout=out, stderr=subprocess.DEVNULL)
    old = time.time() - 3600
    os.utime(os.path.join(inc, "one.csv"), (old, old))
    el, rss = ferry_run(spool)
    total = time.perf_counter() - t
    n = stored(spool)
    shutil.rmtree(spool, ignore_errors=True)
    return total, rss, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if not os.path.exists(FERRY):
        subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True)
    csv, zp, pgp = prepare()
    runs = {"plain": [], "zip": [], "pgp": [], "gpg+run": []}
    rss = {k: 0.0 for k in runs}
    rows = None
    for r in range(a.rounds):
        order = list(runs)
        order = order[r % len(order):] + order[:r % len(order)]
        for k in order:
            if k == "gpg+run":
                el, m, n = gpg_then_run(pgp)
            else:
                el, m, n = contender(k, {"plain": csv, "zip": zp, "pgp": pgp}[k])
            if rows is None:
                rows = n
            if n != rows:
                raise SystemExit("%s stored %d rows, not %d" % (k, n, rows))
            runs[k].append(el)
            rss[k] = max(rss[k], m)
            print("round %d %-8s %6.2f s  %8.0f rows/s  peak RSS %4.0f MiB" % (r + 1, k, el, n / el, m),
                  file=sys.stderr)
    med = {k: statistics.median(v) for k, v in runs.items()}
    rate = {k: rows / med[k] for k in runs}
    print("\n| contender | median s | rows/s | ferry peak RSS |")
    print("|---|---|---|---|")
    for k in runs:
        print("| %s | %.2f | %s | %.0f MiB |" % (k, med[k], format(int(rate[k]), ","), rss[k]))
    print("\nzip / plain: %.2f (target >= 0.70)" % (rate["zip"] / rate["plain"]))
    print("pgp / plain: %.2f (target >= 0.70)" % (rate["pgp"] / rate["plain"]))
    print("pgp / gpg+run: %.2fx (target >= 1.0x)" % (rate["pgp"] / rate["gpg+run"]))


if __name__ == "__main__":
    main()
