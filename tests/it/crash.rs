//! Crashes: kill -9 at random moments, then run again. Nothing lost, nothing doubled.

use crate::harness::*;
use std::fs;
use std::time::Duration;

/// A mix of many small files and a few big ones (streamed in chunks, several transactions).
/// Compares two loads' records, naming the first difference (not printing them all).
fn same_records(got: &[String], want: &[String], round: usize, what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "round {round}: {what} files: {} records stored, {} expected; first difference at {first:?}: {:?} vs {:?}",
        got.len(),
        want.len(),
        first.and_then(|i| got.get(i)),
        first.and_then(|i| want.get(i))
    );
}

fn drop_workload(s: &Spool) -> usize {
    let mut n = 0;
    for i in 0..150 {
        let mut body = String::from("id,name,amount,note\n");
        for r in 0..200 {
            body.push_str(&format!(
                "{i}-{r},name {r},{}.{:02},\"note, {i}\"\n",
                r * 7,
                r % 100
            ));
        }
        s.drop_file(&format!("small/f{i:03}.csv"), body.as_bytes());
        n += 1;
    }
    for i in 0..3 {
        let mut body = String::new();
        for r in 0..60_000 {
            body.push_str(&format!(
                "{{\"id\":\"{i}-{r}\",\"v\":{r},\"s\":\"row {r} of big file {i}\"}}\n"
            ));
        }
        s.drop_file(&format!("big/b{i}.ndjson"), body.as_bytes());
        n += 1;
    }
    n
}

both_stores! {
    fn kill_9_at_random_moments_then_rerun_equals_an_uninterrupted_run() {
        let reference = Spool::new();
        let n = drop_workload(&reference);
        reference.ferry_ok(&["run"], 0);
        let want_small = reference.records_with_paths("small");
        let want_big = reference.records_with_paths("big");
        assert_eq!(want_small.len(), 150 * 200);
        assert_eq!(want_big.len(), 3 * 60_000);

        let mut rng = Rng::from_time();
        for round in 0..3 {
            let s = Spool::new();
            drop_workload(&s);
            let inputs = tree(&s.incoming());
            let mut kills = 0;
            // Several crashes at random moments, each followed by a restart that may crash too.
            for _ in 0..4 {
                let mut child = s.cmd().arg("run").arg("--no-progress").spawn().unwrap();
                std::thread::sleep(Duration::from_millis(20 + rng.below(900)));
                if child.try_wait().unwrap().is_none() {
                    child.kill().unwrap();
                    kills += 1;
                }
                child.wait().unwrap();
            }
            s.ferry_ok(&["run"], 0);
            eprintln!("round {round}: {kills} kills");

            same_records(&s.records_with_paths("small"), &want_small, round, "small");
            same_records(&s.records_with_paths("big"), &want_big, round, "big");
            assert_eq!(
                s.count("SELECT count(*) FROM files WHERE state = 'ingested'"),
                n as i64,
                "round {round}: every file ingested once"
            );
            assert_eq!(
                s.count("SELECT count(*) FROM files"),
                n as i64,
                "round {round}: no extra rows"
            );
            assert!(
                s.leftover_inputs().is_empty(),
                "round {round}: {:?}",
                s.leftover_inputs()
            );
            // Every input is in the archive, byte-identical.
            let archived: std::collections::BTreeSet<String> =
                tree(&s.root.join("archive")).into_values().collect();
            for (path, hash) in &inputs {
                assert!(
                    archived.contains(hash),
                    "round {round}: {path} missing from the archive"
                );
            }
        }
    }
}

both_stores! {
    fn a_committed_file_left_in_processing_is_placed_without_a_new_row() {
        let s = Spool::new();
        s.drop_file("d/a.csv", b"k\n1\n2\n");
        s.ferry_ok(&["run"], 0);
        let f = s.files_by_path()["d/a.csv"].clone();
        let claim = f["claim"].as_str().unwrap();
        // As if the process died between the commit and the move: the file is back in processing/
        // under its claim, and its owner (the finished run) holds no lock.
        let archived = s.root.join(f["stored_at"].as_str().unwrap());
        let in_processing = s.root.join("processing").join(format!("{claim}~d%2Fa.csv"));
        fs::rename(&archived, &in_processing).unwrap();
        s.ferry_ok(&["run"], 0);
        assert_eq!(fs::read(&archived).unwrap(), b"k\n1\n2\n");
        assert!(!in_processing.exists());
        assert_eq!(s.files().len(), 1);
        assert_eq!(s.count("SELECT count(*) FROM d"), 2);
    }
}

both_stores! {
    fn an_uncommitted_claim_of_a_dead_process_is_processed_again() {
        let s = Spool::new();
        fs::create_dir_all(s.root.join("processing")).unwrap();
        // A claim by an owner that no longer exists, never committed.
        let p = s
            .root
            .join("processing")
            .join("0a0b0c-999999-dead.7~d%2Fb.csv");
        fs::write(&p, b"k\n5\n").unwrap();
        s.ferry_ok(&["run"], 0);
        let f = &s.files_by_path()["d/b.csv"];
        assert_eq!(f["state"], "ingested");
        assert_eq!(s.count("SELECT count(*) FROM d"), 1);
        assert!(s.leftover_inputs().is_empty());
        assert!(!s
            .root
            .join("processing/.owners/0a0b0c-999999-dead")
            .exists());
    }
}
