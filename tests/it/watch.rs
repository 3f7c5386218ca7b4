//! `ferry watch`: the daemon, run as a real process.

use crate::harness::*;
use std::fs;
use std::io::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn start(s: &Spool, args: &[&str]) -> Child {
    s.cmd()
        .arg("watch")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn sigterm(child: &mut Child) -> Option<i32> {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the ledger has `n` rows (the daemon commits asynchronously).
fn wait_for_files(s: &Spool, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if s.root.join("ferry.db").exists() && s.count_or_zero("SELECT count(*) FROM files") >= n {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {n} files");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn files_present_at_start_and_renamed_in_are_taken_then_sigterm_stops_cleanly() {
    let s = Spool::new();
    s.drop_file("sales/before.csv", b"a,b\n1,2\n");
    let mut d = start(&s, &[]);
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

#[test]
fn a_slow_writer_is_not_claimed_until_it_is_done() {
    let s = Spool::new();
    fs::write(s.root.join("ferry.toml"), "[ready]\nsettle = \"1s\"\n").unwrap();
    let mut d = start(&s, &[]);
    let path = s.incoming().join("slow.csv");
    let mut expected = String::from("n\n");
    fs::write(&path, &expected).unwrap();
    // A chunk every 200 ms for 3 s, reopening the file each time, no temp name.
    for i in 0..15 {
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
    assert_eq!(f["records"], 15);
    assert_eq!(f["sha256"], sha256_hex(expected.as_bytes()));
}

#[test]
fn poll_mode_finds_files_without_events() {
    let s = Spool::new();
    let mut d = start(&s, &["--poll", "100ms"]);
    std::thread::sleep(Duration::from_millis(200));
    s.drop_file("a/x.csv", b"k\n1\n");
    wait_for_files(&s, 1);
    assert_eq!(sigterm(&mut d), Some(0));
    assert_eq!(s.files()[0]["state"], "ingested");
}

#[test]
fn sigterm_mid_batch_then_run_takes_every_file_exactly_once() {
    let s = Spool::new();
    for i in 0..300 {
        s.drop_file(&format!("bulk/f{i:04}.csv"), format!("n\n{i}\n").as_bytes());
    }
    let mut d = start(&s, &[]);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(sigterm(&mut d), Some(0));
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM files"), 300);
    assert_eq!(s.count("SELECT count(DISTINCT n) FROM bulk"), 300);
    assert_eq!(s.count("SELECT count(*) FROM bulk"), 300);
    assert!(s.leftover_inputs().is_empty());
}
