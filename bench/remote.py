#!/usr/bin/env python3
"""Pulling over SFTP: ferry's `[[source]]` against what a user scripts today, in the same runs.

A throwaway OpenSSH server (sshd on a free port on 127.0.0.1, a host key and a client key made
for it) serves a folder holding the files. Two contenders, each on a fresh spool, alternating:

  sftp+run  `sftp -b` (OpenSSH's client) bulk `get -pr` of the folder into the spool's
            incoming/, then `ferry run` — the cron script teams write
  ferry     `ferry run` with the folder as a `[[source]]` (default settings: settle 1 s, 4
            connections, after = keep): listing, claims in the store, downloads overlapped with
            parsing, every check on

Sets: `big` (200 files of ~4.7 MB, 6.8 M rows, from ingest.py) and `small` (5,000 files of 50
rows, the first 5,000 of ingest.py's small set). Reported: rows/s over the whole job (download
and load), and ferry's peak RSS. Then `unchanged`: a poll of a folder whose files were all
loaded before (ferry: a `run` that lists, finds nothing new, downloads nothing) against a bare
listing of the same folder (`sftp -b` with `ls -R`).

  python3 bench/remote.py                   # both sets, 3 rounds
  python3 bench/remote.py --set small --rounds 1
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
from ingest import FERRY, REPO, SETS, WORK, dataset_facts, generate, run_measured  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    def __init__(self, listen="127.0.0.1"):
        self.dir = tempfile.mkdtemp(prefix="ferry-bench-sshd-")
        self.remote = os.path.join(self.dir, "remote")
        os.makedirs(self.remote)
        for k in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(self.dir, k)],
                           check=True)
        shutil.copy(os.path.join(self.dir, "client_key.pub"), os.path.join(self.dir, "authorized_keys"))
        self.port = free_port()
        kind, blob = open(os.path.join(self.dir, "host_key.pub")).read().split()[:2]
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        with open(self.known_hosts, "w") as fh:
            fh.write("[127.0.0.1]:%d %s %s\n" % (self.port, kind, blob))
        self.user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        self.fingerprint = subprocess.run(["ssh-keygen", "-lf", os.path.join(self.dir, "host_key.pub")],
                                          capture_output=True, text=True, check=True).stdout.split()[1]
        self.key = os.path.join(self.dir, "client_key")
        cfg = os.path.join(self.dir, "sshd_config")
        with open(cfg, "w") as fh:
            fh.write("Port %d\nListenAddress %s\nHostKey %s\nPidFile %s\nAuthorizedKeysFile %s\n"
                     "PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\n"
                     "UsePAM no\nPermitRootLogin yes\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
                     "MaxStartups 100\nMaxSessions 100\n" % (
                         self.port, listen, os.path.join(self.dir, "host_key"), os.path.join(self.dir, "sshd.pid"),
                         os.path.join(self.dir, "authorized_keys")))
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", cfg], stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("sshd did not start")
                time.sleep(0.05)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def sftp(self, batch):
        return ["sftp", "-q", "-b", batch, "-i", self.key, "-P", str(self.port),
                "-o", "UserKnownHostsFile=" + self.known_hosts, "-o", "StrictHostKeyChecking=yes",
                "%s@127.0.0.1" % self.user]

    def source(self, folder):
        return ('[[source]]\nname = "partner"\nurl = "sftp://%s@127.0.0.1:%d%s"\ninto = "vehicles"\n'
                'identity_file = "%s"\nknown_hosts = "%s"\n' % (self.user, self.port, folder, self.key,
                                                                 self.known_hosts))


def fresh_spool(name, config=""):
    spool = os.path.join(WORK, name)
    shutil.rmtree(spool, ignore_errors=True)
    os.makedirs(os.path.join(spool, "incoming"))
    with open(os.path.join(spool, "ferry.toml"), "w") as fh:
        fh.write(config)
    return spool


def rows_of(spool):
    out = subprocess.run(["sqlite3", os.path.join(spool, "ferry.db"), "SELECT coalesce(sum(records),0) FROM files"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def scripted(sshd, folder, name):
    """sftp -b bulk get into incoming/vehicles, then ferry run."""
    spool = fresh_spool("remote-script")
    batch = os.path.join(WORK, "remote-batch")
    with open(batch, "w") as fh:
        fh.write("get -pr %s %s\n" % (folder, os.path.join(spool, "incoming", "vehicles")))
    t = time.perf_counter()
    _, rss_sftp = run_measured(sshd.sftp(batch), stdout=subprocess.DEVNULL)
    # `get -p` keeps the remote times (the files settled long ago), so ferry takes them at once.
    _, rss = run_measured([FERRY, "--root", spool, "-q", "run", "--no-progress"], stdout=subprocess.DEVNULL)
    el = time.perf_counter() - t
    return el, rss, rows_of(spool), spool


def pulled(sshd, folder, name):
    spool = fresh_spool("remote-ferry", sshd.source(folder))
    el, rss = run_measured([FERRY, "--root", spool, "-q", "run", "--no-progress"], stdout=subprocess.DEVNULL)
    return el, rss, rows_of(spool), spool


def serve(sshd, set_name):
    """The set's files in a folder of the server (hard links where possible)."""
    d = generate("big" if set_name == "big" else "small")
    files, _ = dataset_facts(d)
    if set_name == "small":
        files = files[:5000]
    folder = os.path.join(sshd.remote, set_name)
    os.makedirs(folder)
    for f in files:
        try:
            os.link(os.path.join(d, f), os.path.join(folder, f))
        except OSError:
            shutil.copy2(os.path.join(d, f), os.path.join(folder, f))
    rows = sum(SETS[set_name if set_name == "big" else "small"]["rows"] for _ in files)
    return folder, rows, len(files)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default="big,small")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not os.path.exists(FERRY):
        subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True)
    os.makedirs(WORK, exist_ok=True)
    print("machine: %d CPUs" % os.cpu_count())
    sshd = Sshd()
    try:
        for set_name in args.set.split(","):
            folder, want, n = serve(sshd, set_name)
            print("--- %s: %d files, %d rows, over SFTP on 127.0.0.1 ---" % (set_name, n, want), flush=True)
            times = {"sftp+run": [], "ferry": []}
            rss_of = {"sftp+run": 0.0, "ferry": 0.0}
            for r in range(args.rounds):
                order = [("sftp+run", scripted), ("ferry", pulled)]
                if r % 2:
                    order.reverse()
                for label, fn in order:
                    el, rss, rows, spool = fn(sshd, folder, set_name)
                    assert rows == want, (label, rows, want)
                    times[label].append(el)
                    rss_of[label] = max(rss_of[label], rss)
                    print("  round %d  %-9s %7.2f s  %10.0f rows/s  %5.0f MiB" % (r + 1, label, el, rows / el, rss),
                          flush=True)
                    if label == "ferry" and r == args.rounds - 1:
                        # An unchanged folder polled again, against a bare recursive listing.
                        poll, _ = run_measured([FERRY, "--root", spool, "-q", "run", "--no-progress"],
                                               stdout=subprocess.DEVNULL)
                        batch = os.path.join(WORK, "remote-ls")
                        with open(batch, "w") as fh:
                            fh.write("ls -l %s\n" % folder)
                        bare, _ = run_measured(sshd.sftp(batch), stdout=subprocess.DEVNULL)
                        print("  unchanged folder: ferry poll %.2f s, bare listing %.2f s (%.1fx)" % (
                            poll, bare, poll / bare), flush=True)
                    shutil.rmtree(spool, ignore_errors=True)
            s, f = statistics.median(times["sftp+run"]), statistics.median(times["ferry"])
            print("== %s: sftp -b + ferry run %10.0f rows/s; ferry pulling %10.0f rows/s = %.2fx; ferry peak RSS "
                  "%.0f MiB" % (set_name, want / s, want / f, s / f, rss_of["ferry"]), flush=True)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        sshd.stop()


if __name__ == "__main__":
    main()
