//! What only a store shared by several hosts has to get right: hosts racing on the same content
//! and the same record keys, exports while several hosts commit, a host that freezes and comes
//! back after its claims were taken over, a database that goes away, values PostgreSQL cannot
//! hold. Each "host" is a spool of its own (or a process) on one PostgreSQL database.

use crate::export::{assert_in_stored_order, check_batches};
use crate::harness::*;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn csv_rows(from: usize, to: usize) -> String {
    labelled_rows(from, to, "row")
}

/// Records `from..to` with a label naming where they came from.
fn labelled_rows(from: usize, to: usize, label: &str) -> String {
    let mut body = String::from("n,label\n");
    for i in from..to {
        body.push_str(&format!("{i},\"{label} {i}\"\n"));
    }
    body
}

/// Runs `ferry run` on each spool at the same time; every run must succeed.
fn run_all_at_once(spools: &[&Spool]) {
    std::thread::scope(|sc| {
        for s in spools {
            sc.spawn(move || s.ferry_ok(&["run"], 0));
        }
    });
}

#[test]
fn the_same_content_dropped_on_two_hosts_at_once_is_stored_once() {
    on(Backend::Postgres, || {
        let a = Spool::new();
        let b = a.another_host();
        for i in 0..40 {
            let body = csv_rows(i * 10, i * 10 + 10);
            a.drop_file(&format!("same/a{i:02}.csv"), body.as_bytes());
            b.drop_file(&format!("same/b{i:02}.csv"), body.as_bytes());
        }
        run_all_at_once(&[&a, &b]);
        assert_eq!(
            a.count("SELECT count(*) FROM files WHERE state = 'ingested'"),
            40
        );
        assert_eq!(
            a.count("SELECT count(*) FROM files WHERE state = 'duplicate'"),
            40
        );
        assert_eq!(
            a.count("SELECT count(DISTINCT sha256) FROM files WHERE state = 'ingested'"),
            40
        );
        assert_eq!(a.count("SELECT count(*) FROM same"), 400);
        assert_eq!(a.count("SELECT count(DISTINCT n) FROM same"), 400);
        assert!(a.leftover_inputs().is_empty() && b.leftover_inputs().is_empty());
    })
}

/// One process with several writers shares its files among them as several hosts would: the
/// same content twice is still stored once (whichever writer takes which copy), and keyed
/// files, which go to one writer of the process, keep their keys.
#[test]
fn writers_of_one_process_store_each_content_and_each_key_once() {
    on(Backend::Postgres, || {
        let s = Spool::new();
        fs::write(
            s.root.join("ferry.toml"),
            "[store]\nwriters = 4\n\n[[dataset]]\nname = \"k\"\nkey = [\"n\"]\n",
        )
        .unwrap();
        let check = s.json(&["config", "check", "--json"]);
        assert_eq!(check["store_writers"], 4, "{check}");
        for i in 0..30 {
            let body = csv_rows(i * 10, i * 10 + 10);
            s.drop_file(&format!("same/a{i:02}.csv"), body.as_bytes());
            s.drop_file(&format!("same/b{i:02}.csv"), body.as_bytes());
            // Keys 0..1500 twice over, in files of other content.
            let from = (i % 15) * 100;
            let body = labelled_rows(from, from + 100, &format!("file {i}"));
            s.drop_file(&format!("k/{i:02}.csv"), body.as_bytes());
        }
        s.ferry_ok(&["run"], 0);
        assert_eq!(
            s.count("SELECT count(*) FROM files WHERE state = 'ingested'"),
            60
        );
        assert_eq!(
            s.count("SELECT count(*) FROM files WHERE state = 'duplicate'"),
            30
        );
        assert_eq!(s.count("SELECT count(*) FROM same"), 300);
        assert_eq!(s.count("SELECT count(DISTINCT n) FROM same"), 300);
        assert_eq!(s.count("SELECT count(*) FROM k"), 1500);
        assert_eq!(s.count("SELECT count(DISTINCT n) FROM k"), 1500);
        assert_eq!(
            s.count("SELECT sum(duplicate_records) FROM files WHERE state = 'ingested'"),
            1500
        );
        assert_eq!(
            s.count("SELECT count(DISTINCT _id) FROM same")
                + s.count("SELECT count(DISTINCT _id) FROM k"),
            1800
        );
        assert!(s.leftover_inputs().is_empty());
    })
}

/// Only tables read by id range get an index on `_id` (its upkeep is a fifth of the server's
/// work per stored row): an exported dataset's at its first export (built while nothing waits
/// for it), a keyed dataset's when a key is first compared with a stored record. A keyed load of
/// new keys on one host never needs it.
#[test]
fn the_id_index_is_built_only_where_ids_are_read_by_range() {
    on(Backend::Postgres, || {
        let s = Spool::new();
        fs::write(
            s.root.join("ferry.toml"),
            "[[dataset]]\nname = \"k\"\nkey = [\"n\"]\n",
        )
        .unwrap();
        let indexes = |table: &str| {
            s.count(&format!(
                "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() \
                 AND tablename = '{table}'"
            ))
        };
        for t in ["plain", "k", "ev"] {
            s.drop_file(&format!("{t}/a.csv"), csv_rows(0, 100).as_bytes());
        }
        s.drop_file("k/b.csv", csv_rows(100, 200).as_bytes());
        s.ferry_ok(&["run"], 0);
        assert_eq!((indexes("plain"), indexes("k"), indexes("ev")), (0, 0, 0));

        let out = s.scratch("out");
        let to = out.to_str().unwrap();
        s.ferry_ok(&["export", "ev", "--to", to, "--max-rows", "30"], 0);
        assert_eq!(indexes("ev"), 1);
        let (rows, ranges) = check_batches(&out);
        assert_eq!(ranges.len(), 4);
        let mut exported: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
        exported.sort();
        assert_eq!(exported, (0..100).collect::<Vec<i64>>());

        // Keys sent again (other content): each hash match is compared with the stored record.
        s.drop_file("k/c.csv", labelled_rows(50, 150, "again").as_bytes());
        s.ferry_ok(&["run"], 0);
        assert_eq!(indexes("k"), 1);
        assert_eq!(s.count("SELECT count(*) FROM k"), 200);
        assert_eq!(
            s.count("SELECT duplicate_records FROM files WHERE path = 'k/c.csv'"),
            100
        );
        assert_eq!(indexes("plain"), 0);
    })
}

/// Two hosts on one database, each with dataset `k` keyed on column `n`.
fn two_hosts_with_a_keyed_dataset() -> (Spool, Spool) {
    let a = Spool::new();
    let b = a.another_host();
    for s in [&a, &b] {
        fs::write(
            s.root.join("ferry.toml"),
            "[[dataset]]\nname = \"k\"\nkey = [\"n\"]\n",
        )
        .unwrap();
    }
    (a, b)
}

#[test]
fn record_keys_hold_across_hosts_loading_at_once() {
    on(Backend::Postgres, || {
        let (a, b) = two_hosts_with_a_keyed_dataset();
        // Host a has keys 0..3000, host b 1500..4500: 1500 keys arrive on both.
        for f in 0..30 {
            a.drop_file(
                &format!("k/a{f:02}.csv"),
                csv_rows(f * 100, f * 100 + 100).as_bytes(),
            );
            let from = 1500 + f * 100;
            let body = labelled_rows(from, from + 100, "from b");
            b.drop_file(&format!("k/b{f:02}.csv"), body.as_bytes());
        }
        run_all_at_once(&[&a, &b]);
        assert_eq!(a.count("SELECT count(*) FROM k"), 4500);
        assert_eq!(a.count("SELECT count(DISTINCT n) FROM k"), 4500);
        assert_eq!(
            a.count("SELECT sum(duplicate_records) FROM files WHERE state = 'ingested'"),
            1500
        );
        assert_eq!(
            a.count("SELECT count(*) FROM files WHERE state = 'ingested'"),
            60
        );
    })
}

/// Two daemons, files arriving on both over time with overlapping keys: each group of one host
/// must first learn the keys the other committed since its last (the key log), or it would
/// store them again.
#[test]
fn record_keys_hold_while_two_daemons_take_turns() {
    on(Backend::Postgres, || {
        let (a, b) = two_hosts_with_a_keyed_dataset();
        let mut daemons = [start_watch(&a, &[]), start_watch(&b, &[])];
        // File i on a: keys 50i..50i+100; on b: 50i+25..50i+125. Every key arrives 2-4 times.
        for i in 0..20 {
            let (from_a, from_b) = (i * 50, i * 50 + 25);
            let body = labelled_rows(from_a, from_a + 100, "from a");
            a.drop_file(&format!("k/a{i:02}.csv"), body.as_bytes());
            std::thread::sleep(Duration::from_millis(40));
            let body = labelled_rows(from_b, from_b + 100, "from b");
            b.drop_file(&format!("k/b{i:02}.csv"), body.as_bytes());
            std::thread::sleep(Duration::from_millis(40));
        }
        wait_for_files(&a, 40);
        for d in &mut daemons {
            assert_eq!(sigterm(d), Some(0));
        }
        let distinct = 19 * 50 + 125;
        assert_eq!(a.count("SELECT count(*) FROM k"), distinct);
        assert_eq!(a.count("SELECT count(DISTINCT n) FROM k"), distinct);
        assert_eq!(
            a.count("SELECT sum(duplicate_records) FROM files WHERE state = 'ingested'"),
            40 * 100 - distinct
        );
        // The hosts took turns: many groups held the table's key row.
        assert!(a.count("SELECT epoch FROM ferry_keys WHERE table_name = 'k'") > 2);
    })
}

#[test]
fn exports_while_three_hosts_commit_miss_nothing_and_repeat_nothing() {
    on(Backend::Postgres, || {
        let hosts = {
            let a = Spool::new();
            let (b, c) = (a.another_host(), a.another_host());
            [a, b, c]
        };
        let mut daemons: Vec<_> = hosts.iter().map(|h| start_watch(h, &[])).collect();
        let out = hosts[0].scratch("out");
        let out_s = out.to_str().unwrap();
        let (files, rows) = (30usize, 40usize);
        let total = (hosts.len() * files * rows) as u64;
        std::thread::scope(|sc| {
            for (h, host) in hosts.iter().enumerate() {
                sc.spawn(move || {
                    let staging = host.scratch("staging");
                    fs::create_dir_all(host.incoming().join("ev")).unwrap();
                    for f in 0..files {
                        let first = (h * files + f) * rows;
                        let tmp = staging.join(format!("f{f}.csv"));
                        fs::write(&tmp, csv_rows(first, first + rows)).unwrap();
                        let to = host.incoming().join(format!("ev/h{h}-{f:03}.csv"));
                        fs::rename(&tmp, to).unwrap();
                        std::thread::sleep(Duration::from_millis(5));
                    }
                });
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            let want = (hosts.len() * files) as i64;
            while hosts[0].count_or_zero("SELECT count(*) FROM files") < want {
                assert!(
                    Instant::now() < deadline,
                    "the daemons did not take every file"
                );
                let o = hosts[0].ferry(&["export", "ev", "--to", out_s, "--max-rows", "50"]);
                assert!(matches!(o.status.code(), Some(0 | 2)), "{o:?}");
            }
        });
        hosts[0].ferry_ok(&["export", "ev", "--to", out_s, "--max-rows", "50"], 0);
        for d in &mut daemons {
            assert_eq!(sigterm(d), Some(0));
        }
        let (exported, _) = check_batches(&out);
        assert_in_stored_order(&hosts[0], &exported, total);
        let workers = hosts[0].count("SELECT count(DISTINCT worker) FROM files");
        assert_eq!(workers, 3, "each host loaded its own files");
    })
}

fn signal(pid: u32, sig: i32) {
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[test]
fn a_frozen_host_loses_its_claims_after_the_lease_and_cannot_record_them_when_it_wakes() {
    on(Backend::Postgres, || {
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"), "[store]\nlease = \"2s\"\n").unwrap();
        let body = csv_rows(0, 50);
        s.drop_file("t/a.csv", body.as_bytes());
        let mut frozen = s
            .cmd()
            .arg("run")
            .env("FERRY_FAULT_SLOW_MS", "4000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.incoming().join("t/a.csv").exists() {
            assert!(Instant::now() < deadline, "the file was not claimed");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The host freezes holding the claim (its process is alive: only the lease tells).
        signal(frozen.id(), libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(300));
        // Before the lease ends, nobody takes the claim over.
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count_or_zero("SELECT count(*) FROM files"), 0);
        std::thread::sleep(Duration::from_millis(2500));
        s.ferry_ok(&["run"], 0);
        signal(frozen.id(), libc::SIGCONT);
        let status = wait_within(&mut frozen, Duration::from_secs(30));
        assert_ne!(
            status.code(),
            Some(0),
            "the frozen host must notice it lost its lease"
        );
        assert_eq!(s.count("SELECT count(*) FROM files"), 1);
        assert_eq!(
            s.count("SELECT count(*) FROM files WHERE state = 'ingested' AND records = 50"),
            1
        );
        assert_eq!(s.count("SELECT count(*) FROM t"), 50);
        assert!(s.leftover_inputs().is_empty(), "{:?}", s.leftover_inputs());
        let archived: Vec<_> = tree(&s.root.join("archive"))
            .into_values()
            .filter(|h| *h == sha256_hex(body.as_bytes()))
            .collect();
        assert_eq!(archived.len(), 1, "archived once");
        // The woken host recorded nothing; a later run has nothing to do.
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM files"), 1);
    })
}

#[test]
fn values_postgres_cannot_hold_set_the_file_aside_with_a_reason() {
    on(Backend::Postgres, || {
        let s = Spool::new();
        fs::write(
            s.root.join("ferry.toml"),
            "[[dataset]]\nname = \"nul\"\nallow_nul = true\n\n\
             [[dataset]]\nname = \"ts\"\ncolumns = [{ name = \"t\", type = \"datetime\" }]\n",
        )
        .unwrap();
        s.drop_file("nul/a.csv", b"a,b\n1,x\x00y\n");
        s.drop_file("ts/nanos.csv", b"t\n2024-05-01T10:00:00.123456789Z\n");
        s.drop_file("ts/micros.csv", b"t\n2024-05-01T10:00:00.123456Z\n");
        s.ferry_ok(&["run"], 3);
        let f = s.files_by_path();
        for p in ["nul/a.csv", "ts/nanos.csv"] {
            assert_eq!(f[p]["state"], "quarantined", "{p}");
            assert_eq!(f[p]["error_kind"], "store.unsupported_value", "{p}");
        }
        assert_eq!(f["ts/micros.csv"]["state"], "ingested");
        assert_eq!(
            s.query("SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') FROM ts"),
            [[Some("2024-05-01T10:00:00.123456".to_string())]]
        );
        assert!(!s.table_exists("nul"));
    })
}

#[test]
fn a_store_that_cannot_be_reached_is_named_without_its_password() {
    let s = Spool::new();
    let url = format!(
        "postgres://alice:s3cr3t-pw@127.0.0.1:{}/inbox_db",
        free_port()
    );
    for args in [&["run"][..], &["status"], &["config", "check"], &["files"]] {
        let out = s
            .cmd()
            .env("FERRY_STORE", &url)
            .args(args)
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("127.0.0.1") && err.contains("inbox_db") && err.contains("alice"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("s3cr3t"),
            "{args:?} printed the password: {err}"
        );
    }
    // Nothing was claimed while the store was away.
    s.drop_file("x/a.csv", b"a\n1\n");
    let out = s
        .cmd()
        .env("FERRY_STORE", &url)
        .arg("run")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(s.incoming().join("x/a.csv").exists());
}

/// A TCP relay to the test server that can be cut (connections dropped, new ones refused) and
/// restored: a database that goes away and comes back, seen from ferry.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(to: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if !up2.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let mut open = open2.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 << 10];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, up, open }
    }

    /// A relay (down) to the database of `s`, and the URL that reaches it through the relay.
    fn to_database_of(s: &Spool) -> (Relay, String) {
        let relay = Relay::start(crate::pg::server().port);
        let db =
            s.pg.as_ref()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string();
        let url = format!("postgres://postgres@127.0.0.1:{}/{db}", relay.port);
        (relay, url)
    }

    fn set_up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// The database is gone: open connections break, new ones are refused.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn health_probes_follow_the_store_going_away_and_coming_back() {
    on(Backend::Postgres, || {
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"), "[store]\nlease = \"2s\"\n").unwrap();
        let (relay, via_relay) = Relay::to_database_of(&s);
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut daemon = start_watch_with(
            &s,
            &["--metrics", &addr],
            &[("FERRY_STORE", via_relay.as_str())],
        );
        let t = Duration::from_secs(20);
        wait_probe(port, "/healthz", (503, "backing_off"), t);
        wait_probe(port, "/readyz", (503, "backing_off"), t);
        relay.set_up();
        wait_probe(port, "/healthz", (200, "running"), Duration::from_secs(30));
        wait_probe(port, "/readyz", (200, "running"), t);
        // Gone while idle: the lease's heartbeat notices within a third of the lease.
        relay.cut();
        wait_probe(port, "/healthz", (503, "backing_off"), t);
        relay.set_up();
        wait_probe(port, "/healthz", (200, "running"), Duration::from_secs(90));
        s.drop_file("h/a.csv", b"n\n1\n");
        wait_for_files_within(&s, 1, t);
        assert_eq!(sigterm(&mut daemon), Some(0));
    })
}

#[test]
fn watch_waits_out_a_database_that_goes_away_and_loads_everything_once_it_returns() {
    on(Backend::Postgres, || {
        let s = Spool::new();
        let (relay, via_relay) = Relay::to_database_of(&s);
        let env = [("FERRY_STORE", via_relay.as_str())];
        // Started while the database is away: the daemon waits for it instead of exiting.
        let mut daemon = start_watch_with(&s, &[], &env);
        for i in 0..5 {
            s.drop_file(
                &format!("d/early{i}.csv"),
                csv_rows(i * 10, i * 10 + 10).as_bytes(),
            );
        }
        std::thread::sleep(Duration::from_millis(1500));
        assert!(daemon.try_wait().unwrap().is_none(), "the daemon gave up");
        assert_eq!(
            fs::read_dir(s.incoming().join("d")).unwrap().count(),
            5,
            "nothing is claimed without the store"
        );
        relay.set_up();
        wait_for_files_within(&s, 5, Duration::from_secs(30));
        // Gone again while files arrive: nothing is lost or doubled, the daemon keeps running.
        relay.cut();
        for i in 5..25 {
            s.drop_file(
                &format!("d/later{i}.csv"),
                csv_rows(i * 10, i * 10 + 10).as_bytes(),
            );
        }
        std::thread::sleep(Duration::from_millis(2000));
        assert!(daemon.try_wait().unwrap().is_none(), "the daemon gave up");
        relay.set_up();
        wait_for_files_within(&s, 25, Duration::from_secs(60));
        assert_eq!(sigterm(&mut daemon), Some(0));
        assert_eq!(
            s.count("SELECT count(*) FROM files WHERE state = 'ingested'"),
            25
        );
        assert_eq!(s.count("SELECT count(*) FROM d"), 250);
        assert_eq!(s.count("SELECT count(DISTINCT n) FROM d"), 250);
        assert!(s.leftover_inputs().is_empty(), "{:?}", s.leftover_inputs());
    })
}

/// A spool root that does not exist yet, and a ferry command on it with `store`.
fn fresh_root(store: &str) -> (tempfile::TempDir, std::path::PathBuf, std::process::Command) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let mut cmd = std::process::Command::new(FERRY);
    cmd.arg("--root").arg(&root).env("FERRY_STORE", store);
    for k in ["FERRY_LOG", "FERRY_CONFIG", "FERRY_ROOT", "PGPASSWORD"] {
        cmd.env_remove(k);
    }
    (dir, root, cmd)
}

#[test]
fn setup_failures_name_the_servers_reason_and_leave_no_spool() {
    let url = crate::pg::new_database();
    let (base, _) = url.rsplit_once('/').unwrap();
    let (_, host) = base.rsplit_once('@').unwrap();
    let closed = free_port();
    for (store, says) in [
        (format!("{base}/no_such_database"), "does not exist"),
        (
            format!("postgres://nobody_here@{host}/postgres"),
            "role \"nobody_here\" does not exist",
        ),
        (
            format!("postgres://postgres@127.0.0.1:{closed}/x"),
            "refused",
        ),
    ] {
        let (_d, root, mut cmd) = fresh_root(&store);
        let out = cmd.args(["run", "--init"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(says) && !err.contains("db error"),
            "{store}: {err}"
        );
        assert!(!root.exists(), "{store}: a spool was left behind");
    }

    // Someone else's table called `files` in the schema: ferry says to give it a schema.
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute("CREATE TABLE files (theirs int)").unwrap();
    let (_d, root, mut cmd) = fresh_root(&url);
    let out = cmd.args(["run", "--init"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("[store] schema"), "{err}");
    assert!(!root.exists(), "a spool was left behind");
    let theirs: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'files'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(theirs, 1, "their table is untouched");
    // With a schema of its own, ferry sets up beside it.
    let (_d, root, mut cmd) = fresh_root(&url);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("ferry.toml"), "[store]\nschema = \"ferry\"\n").unwrap();
    let out = cmd.args(["run", "--init"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
