//! `ferry watch`: the daemon, run as a real process.

use crate::harness::*;
use std::fs;
use std::io::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

both_stores! {
    fn files_present_at_start_and_renamed_in_are_taken_then_sigterm_stops_cleanly() {
        let s = Spool::new();
        s.drop_file("sales/before.csv", b"a,b\n1,2\n");
        let mut d = start_watch(&s, &[]);
        wait_for_files(&s, 1);
        // An upload under a temp name, then renamed: taken at once, whole.
        let tmp = s.incoming().join("sales/upload.csv.part");
        fs::write(&tmp, b"a,b\n3,4\n5,6\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(s.count("SELECT count(*) FROM files"), 1, "temp names wait");
        fs::rename(&tmp, s.incoming().join("sales/upload.csv")).unwrap();
        wait_for_files(&s, 2);
        assert_eq!(sigterm(&mut d), Some(0));
        let files = s.files_by_path();
        assert_eq!(files["sales/before.csv"]["records"], 1);
        assert_eq!(files["sales/upload.csv"]["records"], 2);
        assert!(s.leftover_inputs().is_empty());
    }
}

#[test]
fn a_slow_writer_is_not_claimed_until_it_is_done() {
    let s = Spool::new();
    fs::write(s.root.join("ferry.toml"), "[ready]\nsettle = \"1s\"\n").unwrap();
    let mut d = start_watch(&s, &[]);
    let path = s.incoming().join("slow.csv");
    let mut expected = String::from("n\n");
    fs::write(&path, &expected).unwrap();
    // A chunk every 200 ms for 5 s, reopening the file each time, no temp name.
    for i in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        let line = format!("{i}\n");
        f.write_all(line.as_bytes()).unwrap();
        expected.push_str(&line);
        assert!(
            path.exists(),
            "claimed while still being written (after chunk {i})"
        );
    }
    wait_for_files(&s, 1);
    assert_eq!(sigterm(&mut d), Some(0));
    let f = &s.files()[0];
    assert_eq!(f["records"], 25);
    assert_eq!(f["sha256"], sha256_hex(expected.as_bytes()));
}

#[test]
fn poll_mode_finds_files_without_events() {
    let s = Spool::new();
    let mut d = start_watch(&s, &["--poll", "100ms"]);
    std::thread::sleep(Duration::from_millis(200));
    s.drop_file("a/x.csv", b"k\n1\n");
    wait_for_files(&s, 1);
    assert_eq!(sigterm(&mut d), Some(0));
    assert_eq!(s.files()[0]["state"], "ingested");
}

both_stores! {
    fn sigterm_mid_batch_then_run_takes_every_file_exactly_once() {
        let s = Spool::new();
        for i in 0..300 {
            s.drop_file(&format!("bulk/f{i:04}.csv"), format!("n\n{i}\n").as_bytes());
        }
        let mut d = start_watch(&s, &[]);
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(sigterm(&mut d), Some(0));
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM files"), 300);
        assert_eq!(s.count("SELECT count(DISTINCT n) FROM bulk"), 300);
        assert_eq!(s.count("SELECT count(*) FROM bulk"), 300);
        assert!(s.leftover_inputs().is_empty());
    }
}

#[test]
fn done_marker_mode_takes_a_file_only_once_its_marker_exists() {
    let s = Spool::new();
    fs::write(
        s.root.join("ferry.toml"),
        "[ready]\nsettle = \"100ms\"\ndone_marker = \".done\"\n",
    )
    .unwrap();
    let mut d = start_watch(&s, &[]);
    s.drop_file("m/data.csv", b"v\n1\n2\n");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(s.count_or_zero("SELECT count(*) FROM files"), 0);
    assert!(s.incoming().join("m/data.csv").exists());
    fs::write(s.incoming().join("m/data.csv.done"), b"").unwrap();
    wait_for_files(&s, 1);
    assert_eq!(sigterm(&mut d), Some(0));
    assert_eq!(s.files()[0]["records"], 2);
    assert!(s.leftover_inputs().is_empty(), "{:?}", s.leftover_inputs());
}

/// The value of one sample line of a Prometheus exposition.
fn sample(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line[series.len() + 1..].parse().unwrap()
}

both_stores! {
    fn metrics_endpoint_serves_counts_latency_and_waiting_files() {
        let s = Spool::new();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        s.drop_file("a/good.csv", b"x\n1\n2\n3\n");
        s.drop_file("a/bad.json", b"{not json");
        // One record set aside (empty key), one not stored (its key was), one stored.
        s.drop_file("k/a.csv", b"id,x\n1,a\n1,b\n,c\n");
        // Configured in ferry.toml this time (the flag does the same).
        fs::write(
            s.root.join("ferry.toml"),
            format!(
                "[watch]\nmetrics = \"{addr}\"\n\n\
                 [[dataset]]\nname = \"k\"\nkey = [\"id\"]\nmax_bad_records = 5\n"
            ),
        )
        .unwrap();
        let mut d = start_watch(&s, &[]);
        wait_for_files(&s, 3);
        // Still being written: waiting.
        s.drop_fresh("a/fresh.csv", b"x\n9\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            // The counters move just after the commit the ledger shows (once files are placed).
            if let Some(t) = http_get(port, "/metrics") {
                if t.contains("ferry_waiting_files 1")
                    && t.contains("ferry_files_total{outcome=\"ingested\"} 2")
                    && t.contains("ferry_files_total{outcome=\"quarantined\"} 1")
                {
                    break t;
                }
            }
            assert!(
                Instant::now() < deadline,
                "metrics never showed both files done and the waiting one"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(text.starts_with("HTTP/1.0 200 OK"));
        assert_eq!(
            sample(&text, "ferry_files_total{outcome=\"ingested\"}"),
            2.0
        );
        assert_eq!(
            sample(&text, "ferry_files_total{outcome=\"quarantined\"}"),
            1.0
        );
        assert_eq!(sample(&text, "ferry_records_total"), 4.0);
        assert_eq!(sample(&text, "ferry_rejected_records_total"), 1.0);
        assert_eq!(sample(&text, "ferry_duplicate_records_total"), 1.0);
        assert_eq!(sample(&text, "ferry_ingest_latency_seconds_count"), 2.0);
        assert_eq!(
            sample(&text, "ferry_ingest_latency_seconds_bucket{le=\"+Inf\"}"),
            2.0
        );
        assert!(sample(&text, "ferry_last_success_timestamp_seconds") > 1.6e9);
        assert_eq!(sample(&text, "ferry_queue_depth"), 0.0);
        assert!(http_get(port, "/nope").unwrap().starts_with("HTTP/1.0 404"));
        assert_eq!(sigterm(&mut d), Some(0));
    }
}

#[test]
fn disk_full_stops_claiming_then_everything_loads_once_space_returns() {
    let s = Spool::new();
    s.drop_file("warmup/w.csv", b"n\n0\n");
    let flag = s.scratch("flags").join("disk-full");
    let flag_s = flag.to_str().unwrap().to_string();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut d = start_watch_with(
        &s,
        &["--metrics", &addr],
        &[("FERRY_FAULT_DISK_FULL", &flag_s)],
    );
    wait_for_files(&s, 1);
    wait_probe(port, "/healthz", (200, "running"), Duration::from_secs(10));
    fs::write(&flag, b"").unwrap();
    for i in 0..20 {
        let body: String = (0..2000)
            .map(|r| format!("{},{}\n", i * 2000 + r, "y".repeat(40)))
            .collect();
        s.drop_file(
            &format!("full/f{i:02}.csv"),
            format!("n,pad\n{body}").as_bytes(),
        );
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        s.count("SELECT count(*) FROM files"),
        1,
        "nothing is recorded while the disk is full"
    );
    assert!(d.try_wait().unwrap().is_none(), "the daemon keeps running");
    // Health checks say so, with the reason.
    wait_probe(
        port,
        "/healthz",
        (503, "backing_off"),
        Duration::from_secs(10),
    );
    wait_probe(
        port,
        "/readyz",
        (503, "backing_off"),
        Duration::from_secs(10),
    );
    let waiting = s.leftover_inputs().len();
    assert_eq!(waiting, 20, "no file is lost or set aside: {waiting}");
    fs::remove_file(&flag).unwrap();
    wait_for_files_within(&s, 21, Duration::from_secs(40));
    wait_probe(port, "/readyz", (200, "running"), Duration::from_secs(10));
    assert_eq!(sigterm(&mut d), Some(0));
    assert_eq!(
        s.count("SELECT count(*) FROM files WHERE state = 'ingested'"),
        21
    );
    assert_eq!(s.count("SELECT count(*) FROM full"), 20 * 2000);
    assert_eq!(s.count("SELECT count(DISTINCT n) FROM full"), 20 * 2000);
    assert!(s.leftover_inputs().is_empty());
}

#[test]
fn an_incoming_folder_that_vanishes_and_returns_is_watched_again() {
    let s = Spool::new();
    let mut d = start_watch(&s, &[]);
    s.drop_file("a/one.csv", b"n\n1\n");
    wait_for_files(&s, 1);
    fs::remove_dir_all(s.incoming()).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(d.try_wait().unwrap().is_none(), "the daemon keeps running");
    fs::create_dir_all(s.incoming()).unwrap();
    // Back for a while (re-watched), then a file moved in is found by its event.
    std::thread::sleep(Duration::from_millis(1500));
    let tmp = s.incoming().join("two.csv.part");
    fs::write(&tmp, b"n\n2\n").unwrap();
    fs::rename(&tmp, s.incoming().join("a-two.csv")).unwrap();
    wait_for_files_within(&s, 2, Duration::from_secs(5));
    assert_eq!(sigterm(&mut d), Some(0));
    assert!(s.leftover_inputs().is_empty());
}

/// `n` files with distinct content under `dir/`, written under temp names by `writers` threads
/// and renamed in at once.
fn drop_concurrently(s: &Spool, dir: &str, n: usize, writers: usize) -> Vec<String> {
    fs::create_dir_all(s.incoming().join(dir)).unwrap();
    let staging = s.scratch("staging");
    std::thread::scope(|sc| {
        for w in 0..writers {
            let (incoming, staging) = (s.incoming(), staging.clone());
            sc.spawn(move || {
                for i in (w..n).step_by(writers) {
                    let tmp = staging.join(format!("{dir}-{i}"));
                    fs::write(&tmp, format!("n,w\n{i},{w}\n")).unwrap();
                    fs::rename(&tmp, incoming.join(dir).join(format!("f{i:05}.csv"))).unwrap();
                }
            });
        }
    });
    (0..n).map(|i| format!("{dir}/f{i:05}.csv")).collect()
}

/// Every file once in the ledger, every record once in the table, nothing left over.
fn assert_exactly_once(s: &Spool, table: &str, n: i64) {
    assert_eq!(s.count("SELECT count(*) FROM files"), n);
    assert_eq!(s.count("SELECT count(DISTINCT path) FROM files"), n);
    assert_eq!(
        s.count("SELECT count(*) FROM files WHERE state = 'ingested'"),
        n
    );
    assert_eq!(s.count(&format!("SELECT count(*) FROM {table}")), n);
    assert_eq!(
        s.count(&format!("SELECT count(DISTINCT n) FROM {table}")),
        n
    );
    assert!(s.leftover_inputs().is_empty(), "{:?}", s.leftover_inputs());
}

both_stores! {
    fn three_daemons_and_a_run_share_a_spool_and_take_each_of_2000_files_once() {
        let s = Spool::new();
        let mut daemons: Vec<Child> = (0..3).map(|_| start_watch(&s, &[])).collect();
        std::thread::sleep(Duration::from_millis(300));
        std::thread::scope(|sc| {
            sc.spawn(|| drop_concurrently(&s, "shared", 2000, 4));
            sc.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                let out = s.ferry(&["run"]);
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            });
        });
        wait_for_files_within(&s, 2000, Duration::from_secs(60));
        for d in &mut daemons {
            assert_eq!(sigterm(d), Some(0));
        }
        assert_exactly_once(&s, "shared", 2000);
        let workers = s.count("SELECT count(DISTINCT worker) FROM files");
        assert!(
            workers >= 2,
            "the work was shared ({workers} processes took files)"
        );
    }
}

both_stores! {
    fn sigkill_at_random_moments_then_restart_loses_and_doubles_nothing() {
        let s = Spool::new();
        // Six kills: a file in flight at each of them would be set aside as `poison` at the
        // default five starts (by design, and tested elsewhere); this test is about loss and
        // doubling, so every file must be able to survive all six.
        fs::write(s.root.join("ferry.toml"), "max_attempts = 10\n").unwrap();
        let mut rng = Rng::from_time();
        let total = 600;
        for i in 0..total {
            let body: String = (0..(1 + rng.below(300)))
                .map(|r| format!("{i},{r}\n"))
                .collect();
            s.drop_file(&format!("k/f{i:04}.csv"), format!("n,r\n{body}").as_bytes());
        }
        for _ in 0..6 {
            let mut d = start_watch(&s, &[]);
            std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
            sigkill(&mut d);
        }
        let mut d = start_watch(&s, &[]);
        wait_for_files_within(&s, total, Duration::from_secs(60));
        assert_eq!(sigterm(&mut d), Some(0));
        assert_eq!(
            s.count("SELECT count(*) FROM files"),
            total,
            "rows of files recorded more than once: {:?}",
            s.query(
                "SELECT id, path, state, worker, attempt, error_kind FROM files WHERE path IN \
                 (SELECT path FROM files GROUP BY path HAVING count(*) > 1) ORDER BY path, id"
            )
        );
        assert_eq!(s.count("SELECT count(DISTINCT path) FROM files"), total);
        assert_eq!(
            s.count("SELECT count(DISTINCT n) FROM k"),
            total,
            "files without their records: {:?}",
            s.query(
                "SELECT id, path, state, records, worker, attempt FROM files f \
                 WHERE NOT EXISTS (SELECT 1 FROM k WHERE k._file_id = f.id) ORDER BY id"
            )
        );
        assert_eq!(
            s.count("SELECT count(*) FROM (SELECT DISTINCT n, r FROM k) AS d"),
            s.count("SELECT count(*) FROM k"),
            "no record twice"
        );
        assert_eq!(
            s.count("SELECT sum(records) FROM files"),
            s.count("SELECT count(*) FROM k")
        );
        assert!(s.leftover_inputs().is_empty(), "{:?}", s.leftover_inputs());
    }
}

#[test]
fn a_storm_of_10000_files_at_once_is_taken_whole() {
    let s = Spool::new();
    let mut d = start_watch(&s, &[]);
    std::thread::sleep(Duration::from_millis(200));
    drop_concurrently(&s, "storm", 10_000, 2);
    wait_for_files_within(&s, 10_000, Duration::from_secs(120));
    assert_eq!(sigterm(&mut d), Some(0));
    assert_exactly_once(&s, "storm", 10_000);
}

both_stores! {
    fn a_file_that_cannot_be_opened_is_reported_left_and_retried() {
        let s = Spool::new();
        let flag = s.scratch("flags").join("deny");
        fs::write(&flag, b"").unwrap();
        let port = free_port();
        let deny = format!("{}:locked", flag.display());
        let mut d = start_watch_with(
            &s,
            &[
                "--rescan",
                "300ms",
                "--metrics",
                &format!("127.0.0.1:{port}"),
            ],
            &[("FERRY_FAULT_DENY_OPEN", &deny)],
        );
        s.drop_file("p/locked.csv", b"n\n1\n");
        s.drop_file("p/open.csv", b"n\n2\n");
        wait_for_files(&s, 1);
        // Reported (counted as left, again on each rescan), never claimed or set aside.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = http_get(port, "/metrics")
                .map(|t| sample(&t, "ferry_files_total{outcome=\"left\"}"))
                .unwrap_or(0.0);
            if left >= 2.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the unreadable file was not retried"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(s.incoming().join("p/locked.csv").exists());
        assert_eq!(s.count("SELECT count(*) FROM files"), 1);
        // Readable again: taken on a later rescan.
        fs::remove_file(&flag).unwrap();
        wait_for_files(&s, 2);
        assert_eq!(sigterm(&mut d), Some(0));
        assert_eq!(
            s.count("SELECT count(*) FROM files WHERE state = 'ingested'"),
            2
        );
        assert!(s.leftover_inputs().is_empty());
    }
}

both_stores! {
    fn files_that_cannot_be_moved_after_commit_are_placed_once_the_disk_allows() {
        let s = Spool::new();
        let flag = s.scratch("flags").join("no-place");
        fs::write(&flag, b"").unwrap();
        let flag_s = flag.to_str().unwrap().to_string();
        let mut d = start_watch_with(
            &s,
            &["--rescan", "300ms"],
            &[("FERRY_FAULT_FAIL_PLACE", &flag_s)],
        );
        for i in 0..3 {
            s.drop_file(&format!("p/f{i}.csv"), format!("n\n{i}\n").as_bytes());
        }
        wait_for_files(&s, 3);
        std::thread::sleep(Duration::from_millis(800));
        // Committed, but still in processing/ (not lost, not redone) while moves fail.
        assert_eq!(s.leftover_inputs().len(), 3, "{:?}", s.leftover_inputs());
        assert!(d.try_wait().unwrap().is_none(), "the daemon keeps running");
        fs::remove_file(&flag).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !s.leftover_inputs().is_empty() {
            assert!(
                Instant::now() < deadline,
                "never placed: {:?}",
                s.leftover_inputs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(sigterm(&mut d), Some(0));
        assert_eq!(
            s.count("SELECT count(*) FROM files"),
            3,
            "placed, not ingested again"
        );
        assert_eq!(s.count("SELECT count(*) FROM p"), 3);
        let archived = tree(&s.root.join("archive"));
        assert_eq!(archived.len(), 3, "{archived:?}");
        let stored: Vec<String> = s
            .query("SELECT stored_at FROM files ORDER BY id")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect();
        assert!(
            stored.iter().all(|p| s.root.join(p).is_file()),
            "{stored:?}"
        );
    }
}

both_stores! {
    fn processes_starting_together_on_a_new_spool_all_start() {
        for round in 0..6 {
            let s = Spool::new();
            for i in 0..40 {
                s.drop_file(
                    &format!("t/f{i:02}.csv"),
                    format!("n\n{round}{i:02}\n").as_bytes(),
                );
            }
            // No ledger yet: every process races to create it.
            let mut daemon = start_watch(&s, &[]);
            let runs: Vec<Child> = (0..4)
                .map(|_| {
                    s.cmd()
                        .arg("run")
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            for r in runs {
                let out = r.wait_with_output().unwrap();
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            wait_for_files(&s, 40);
            assert_eq!(sigterm(&mut daemon), Some(0), "the daemon started and ran");
            assert_eq!(
                s.count("SELECT count(*) FROM files WHERE state = 'ingested'"),
                40
            );
            assert_eq!(s.count("SELECT count(DISTINCT n) FROM t"), 40);
            assert!(s.leftover_inputs().is_empty());
        }
    }
}

both_stores! {
    fn sighup_reloads_the_config_and_keeps_the_old_one_when_the_new_one_is_bad() {
        let s = Spool::new();
        let strict = "[[dataset]]\nname = \"t\"\ncolumns = [{ name = \"n\", type = \"int\" }]\n";
        // The daemon's config lives apart: the test's own commands read the ledger without it.
        let conf = s.scratch("etc").join("ferry.toml");
        fs::write(&conf, strict).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut d = start_watch(&s, &["--metrics", &addr, "--config", conf.to_str().unwrap()]);
        wait_probe(port, "/healthz", (200, "running"), Duration::from_secs(20));
        let hup = |d: &std::process::Child| {
            // SAFETY: a signal to our own child process.
            assert_eq!(unsafe { libc::kill(d.id() as i32, libc::SIGHUP) }, 0);
        };
        s.drop_file("t/1.csv", b"n\nx\n");
        wait_for_files(&s, 1);
        assert_eq!(s.files_by_path()["t/1.csv"]["state"], "quarantined");

        // A config that does not load: refused, the old one kept, the daemon still running.
        fs::write(&conf, "[[dataset]\nname = ").unwrap();
        hup(&d);
        std::thread::sleep(Duration::from_millis(500));
        s.drop_file("t/2.csv", b"n\ny\n");
        wait_for_files(&s, 2);
        assert_eq!(s.files_by_path()["t/2.csv"]["state"], "quarantined");
        assert!(d.try_wait().unwrap().is_none(), "the daemon keeps running");

        // A good one: the next files are judged under it.
        let loose = "[[dataset]]\nname = \"t\"\ncolumns = [{ name = \"n\" }]\n";
        fs::write(&conf, loose).unwrap();
        hup(&d);
        std::thread::sleep(Duration::from_millis(500));
        s.drop_file("t/3.csv", b"n\nz\n");
        wait_for_files(&s, 3);
        assert_eq!(s.files_by_path()["t/3.csv"]["state"], "ingested");
        wait_probe(port, "/healthz", (200, "running"), Duration::from_secs(5));
        assert_eq!(sigterm(&mut d), Some(0));
    }
}

#[test]
fn feed_silence_is_known_across_restarts_and_runs_write_a_metrics_file() {
    let s = Spool::new();
    s.drop_file("feed/a.csv", b"id\n1\n");
    let prom = s.scratch("textfile").join("ferry.prom");
    s.ferry_ok(&["run", "--metrics-file", prom.to_str().unwrap()], 0);
    let text = fs::read_to_string(&prom).unwrap();
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(value(&text, "ferry_files_total{outcome=\"ingested\"}"), 1.0);
    assert_eq!(value(&text, "ferry_run_exit_code"), 0.0);
    let last = value(
        &text,
        "ferry_dataset_last_success_timestamp_seconds{dataset=\"feed\"}",
    );
    assert!(last > 1.7e9, "{last}");
    // A second run with nothing to do still knows when the feed last loaded (the ledger).
    s.ferry_ok(&["run", "--metrics-file", prom.to_str().unwrap()], 0);
    let again = fs::read_to_string(&prom).unwrap();
    // (The ledger's commit time; the first run counted the moment it saw the commit.)
    let seen = value(
        &again,
        "ferry_dataset_last_success_timestamp_seconds{dataset=\"feed\"}",
    );
    assert!((seen - last).abs() < 1.0, "{seen} vs {last}");
    assert_eq!(
        value(&again, "ferry_files_total{outcome=\"ingested\"}"),
        0.0
    );

    // A daemon started later knows it too, before any new file.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut d = start_watch(&s, &["--metrics", &addr]);
    wait_probe(port, "/healthz", (200, "running"), Duration::from_secs(20));
    let metrics = http_get(port, "/metrics").unwrap();
    sigterm(&mut d);
    let known = value(
        &metrics,
        "ferry_dataset_last_success_timestamp_seconds{dataset=\"feed\"}",
    );
    assert!((known - last).abs() < 1.0, "{known} vs {last}");
}
