#!/usr/bin/env python3
"""Three ferry hosts without a shared folder pull one bucket and one SFTP folder into one
PostgreSQL — and one host dies mid-pull.

Each "host" is a `ferry watch` in network, PID and UTS namespaces of its own (`ip netns` + a
veth pair, as bench/hosts.py), with its own local spool. It reaches PostgreSQL, SeaweedFS (S3)
and OpenSSH's sshd (SFTP) over its link, at the host side's address. Four writers upload FILES
files, half into the bucket (some multipart, 6 MiB in 5 MiB parts) and half into the SFTP
folder (most under a temp name then renamed; some written slowly in place, growing for
seconds). A third of the way through, host 2 loses its link, and a second later — holding
the remote files it claimed meanwhile, some mid-download — is SIGKILLed. Then:

- every uploaded file is in the ledger exactly once (per source and remote path), ingested,
  and every record is stored exactly once;
- host 2's remote claims are taken over by the others: the time from the kill until none of
  them is still held by its owner is the recovery time (bound: one lease plus a third of it).

Needs root (namespaces), PostgreSQL's server binaries, sshd, and SeaweedFS with boto3.

  sudo python3 bench/remote_hosts.py                  # 2000 files, lease 10s
  sudo python3 bench/remote_hosts.py --files 4000 --lease 15s
"""

import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hosts import HOSTS, NET, Lab, lab_main, sh  # noqa: E402
from ingest import FERRY  # noqa: E402
from postgres import psql  # noqa: E402
from remote import Sshd  # noqa: E402
from remote_s3 import BUCKET, KEY, SECRET, Seaweed  # noqa: E402

from boto3.s3.transfer import TransferConfig  # noqa: E402

BIG_ROWS = 520_000  # ~6 MiB: a multipart upload in 5 MiB parts


class RemoteLab(Lab):
    """bench/hosts.py's lab (namespaces, PostgreSQL), plus the servers, and a spool per host."""

    def servers(self):
        """SeaweedFS and sshd, listening on every address (loopback and the links' host sides)."""
        self.seaweed = Seaweed(bind="0.0.0.0")
        self.s3, self.s3port = self.seaweed.client, self.seaweed.port
        self.sshd = Sshd(listen="0.0.0.0")
        self.sshport, self.fingerprint = self.sshd.port, self.sshd.fingerprint
        self.sftp_root = self.sshd.remote
        os.makedirs(os.path.join(self.sftp_root, "feed"))

    def configure(self, h):
        spool = os.path.join(self.dir, "spool%d" % h)
        os.makedirs(os.path.join(spool, "incoming"), exist_ok=True)
        side = "%s.%d.1" % (NET, h)
        with open(os.path.join(spool, "ferry.toml"), "w") as fh:
            fh.write('[store]\nlease = "%s"\n\n' % self.lease)
            fh.write('[[dataset]]\nname = "feed"\nmatch = "**/*.csv"\n'
                     'columns = [{ name = "n", type = "int" }, { name = "writer", type = "int" }]\n\n')
            fh.write('[[source]]\nname = "bucket"\nurl = "s3://%s/feed"\nendpoint = "http://%s:%d"\n'
                     'poll = "500ms"\nsettle = "1s"\nconnections = 4\n\n' % (BUCKET, side, self.s3port))
            fh.write('[[source]]\nname = "sftp"\nurl = "sftp://%s@%s:%d%s/feed"\nidentity_file = "%s"\n'
                     'host_key = "%s"\npoll = "500ms"\nsettle = "1s"\nconnections = 4\n' % (
                         self.sshd.user, side, self.sshport, self.sftp_root, self.sshd.key, self.fingerprint))
        return spool

    def start_remote(self, h):
        spool = self.configure(h)
        url = "postgres://postgres@%s.%d.1:%d/hosts" % (NET, h, self.port)
        log = open(os.path.join(self.dir, "host%d.log" % h), "w")
        env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET)
        p = subprocess.Popen(
            ["ip", "netns", "exec", "ferry-h%d" % h, "unshare", "--pid", "--fork", "--uts", "--kill-child",
             "sh", "-c", 'hostname host%d && exec "$@"' % h, "sh",
             FERRY, "--root", spool, "--store", url, "watch", "--poll", "500ms"],
            stdout=log, stderr=log, env=env)
        self.workers[h] = p

    def cleanup(self):
        for server in (getattr(self, "seaweed", None), getattr(self, "sshd", None)):
            if server:
                server.stop()
        super().cleanup()


def content(i, w, big):
    if big:
        start = 10_000_000 + i * BIG_ROWS
        return "n,writer\n" + "".join("%d,%d\n" % (start + k, w) for k in range(BIG_ROWS))
    return "n,writer\n%d,%d\n" % (i, w)


def writers(lab, files, n_writers, pace):
    """Even files to the bucket (every 50th a multipart 6 MiB one), odd ones over SFTP (every
    25th written slowly in place, the rest renamed in). Returns the threads and the expected
    (records) count."""
    staging = os.path.join(lab.dir, "staging")
    os.makedirs(staging, exist_ok=True)
    multipart = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    expected = [0]
    lock = threading.Lock()

    def write(w):
        start = time.time()
        for k, i in enumerate(range(w, files, n_writers)):
            big = i % 100 == 0
            body = content(i, w, big)
            with lock:
                expected[0] += BIG_ROWS if big else 1
            tmp = os.path.join(staging, "w%d-%d" % (w, i))
            with open(tmp, "w") as fh:
                fh.write(body)
            if i % 2 == 0:
                lab.s3.upload_file(tmp, BUCKET, "feed/f%06d.csv" % i, Config=multipart)
                os.unlink(tmp)
            elif i % 25 == 1:
                # Slowly, under its final name: growing for ~2 s.
                dest = os.path.join(lab.sftp_root, "feed", "f%06d.csv" % i)
                data = body.encode()
                with open(dest, "wb") as fh:
                    for part in range(4):
                        fh.write(data[part * len(data) // 4:(part + 1) * len(data) // 4])
                        fh.flush()
                        time.sleep(0.5)
                os.unlink(tmp)
            else:
                os.rename(tmp, os.path.join(lab.sftp_root, "feed", "f%06d.csv" % i))
            delay = start + (k + 1) * n_writers / pace - time.time()
            if delay > 0:
                time.sleep(delay)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(n_writers)]
    for t in threads:
        t.start()
    return threads, expected


def ingested(lab):
    try:
        return int(psql(lab.db, "SELECT count(*) FROM files WHERE state = 'ingested'"))
    except subprocess.CalledProcessError:
        return 0


def held_by(lab, host):
    try:
        out = psql(lab.db, "SELECT count(*) FROM ferry_remote r JOIN ferry_owners o ON o.token = r.owner "
                           "WHERE r.state = 'claimed' AND o.host = '%s'" % host)
        return int(out)
    except subprocess.CalledProcessError:
        return -1


def run(lab, args):
    lab.network()
    lab.postgres()
    lab.servers()
    for h in range(1, HOSTS + 1):
        lab.start_remote(h)
    time.sleep(1.0)
    t0 = time.time()
    threads, expected = writers(lab, args.files, 4, args.pace)
    # A third of the way, at a moment host 2 holds remote claims (a download in flight).
    while ingested(lab) < args.files // 3:
        time.sleep(0.05)
    wait_until = time.time() + 30
    held = 0
    while time.time() < wait_until:
        held = held_by(lab, "host2")
        if held > 0:
            break
        time.sleep(0.01)
    victim = lab.ferry_pid(2)
    sh("ip", "link", "set", "ferryh2", "down")
    time.sleep(1.0)
    os.kill(victim, signal.SIGKILL)
    killed = time.time()
    print("host 2 cut off and killed at %.1f s, holding %d remote claims" % (killed - t0, held), flush=True)
    recovered = None
    deadline = time.time() + 600
    while True:
        now = time.time()
        if recovered is None and held_by(lab, "host2") == 0:
            recovered = now
        if ingested(lab) >= args.files and recovered is not None and all(not t.is_alive() for t in threads):
            break
        if now > deadline:
            raise SystemExit("not everything was loaded within 600 s: %d files" % ingested(lab))
        time.sleep(0.1)
    done = time.time()
    for h in (1, 3):
        os.kill(lab.ferry_pid(h), signal.SIGTERM)
    for h in (1, 3):
        lab.workers[h].wait(timeout=60)
    q = lambda sql: int(psql(lab.db, sql))  # noqa: E731
    checks = {
        "ledger rows": (q("SELECT count(*) FROM files"), args.files),
        "distinct remote files": (q("SELECT count(DISTINCT (remote_source, remote_path)) FROM files"), args.files),
        "ingested": (q("SELECT count(*) FROM files WHERE state = 'ingested'"), args.files),
        "records": (q("SELECT count(*) FROM feed"), expected[0]),
        "distinct records": (q("SELECT count(DISTINCT n) FROM feed"), expected[0]),
    }
    for k, (got, want) in checks.items():
        print("  %-22s %8d (want %d)" % (k, got, want))
    bad = {k: v for k, v in checks.items() if v[0] != v[1]}
    if bad:
        raise SystemExit("FAILED: %s" % bad)
    print("recovery: host 2's remote claims taken over %.1f s after it died (lease %s)" % (
        recovered - killed, args.lease))
    print("all %d files (%d records) pulled and loaded in %.1f s; exactly once: yes" % (
        args.files, expected[0], done - t0))
    print("files per process: %s" % psql(lab.db, "SELECT string_agg(n::text, ' / ') FROM (SELECT count(*) AS n "
                                                 "FROM files GROUP BY worker ORDER BY 1 DESC) w"))


def main():
    lab_main(RemoteLab, run, 100.0)


if __name__ == "__main__":
    main()
