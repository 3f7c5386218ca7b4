//! A model of what partners and operators do to a watched spool — drop a file by rename, write
//! one in place in two steps, kill the daemon, start it again — checked against the real daemon:
//! whatever the interleaving, every finished file is ingested exactly once, whole.

use crate::harness::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::process::Child;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum Op {
    /// A whole file written elsewhere and renamed in.
    Drop,
    /// The first half of a file written under its final name (no temp name).
    StartPartial,
    /// The rest of the oldest unfinished file appended.
    Finish,
    /// SIGKILL the daemon.
    Crash,
    /// Start the daemon if it is not running.
    Start,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Drop),
        2 => Just(Op::StartPartial),
        2 => Just(Op::Finish),
        2 => Just(Op::Crash),
        2 => Just(Op::Start),
    ]
}

/// The quiet period: longer than a whole op sequence takes, so a file written in two steps is
/// never mistaken for finished (a writer pausing longer than `settle` is the documented limit).
const SETTLE: &str = "3s";

struct World<'a> {
    s: &'a Spool,
    daemon: Option<Child>,
    /// Final name → full content.
    files: BTreeMap<String, String>,
    /// Files written halfway: name and the missing half.
    partial: Vec<(String, String)>,
    next: usize,
}

impl World<'_> {
    fn content(&mut self) -> (String, String) {
        self.next += 1;
        let n = self.next;
        let rows: String = (0..(1 + n % 7)).map(|r| format!("{n},{r}\n")).collect();
        (format!("m/f{n:03}.csv"), format!("n,r\n{rows}"))
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Drop => {
                let (name, body) = self.content();
                let tmp = self.s.scratch("staging").join(name.replace('/', "-"));
                fs::write(&tmp, &body).unwrap();
                let dest = self.s.incoming().join(&name);
                fs::create_dir_all(dest.parent().unwrap()).unwrap();
                fs::rename(&tmp, dest).unwrap();
                self.files.insert(name, body);
            }
            Op::StartPartial => {
                let (name, body) = self.content();
                let cut = body.len() / 2;
                let dest = self.s.incoming().join(&name);
                fs::create_dir_all(dest.parent().unwrap()).unwrap();
                fs::write(&dest, &body[..cut]).unwrap();
                self.partial.push((name.clone(), body[cut..].to_string()));
                self.files.insert(name, body);
            }
            Op::Finish => {
                if !self.partial.is_empty() {
                    self.finish_one();
                }
            }
            Op::Crash => {
                if let Some(mut d) = self.daemon.take() {
                    sigkill(&mut d);
                }
            }
            Op::Start => {
                if self.daemon.is_none() {
                    self.daemon = Some(start_watch(self.s, &[]));
                }
            }
        }
    }

    fn finish_one(&mut self) {
        let (name, rest) = self.partial.remove(0);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.s.incoming().join(&name))
            .expect("a partly written file was claimed");
        f.write_all(rest.as_bytes()).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 6,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn whatever_happens_every_finished_file_is_ingested_once_and_whole(
        ops in prop::collection::vec(op(), 4..14)
    ) {
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"), format!("[ready]\nsettle = \"{SETTLE}\"\n")).unwrap();
        let mut w = World { s: &s, daemon: None, files: BTreeMap::new(), partial: Vec::new(), next: 0 };
        for op in &ops {
            w.apply(op);
            std::thread::sleep(Duration::from_millis(20));
        }
        while !w.partial.is_empty() {
            w.finish_one();
        }
        if w.daemon.is_none() {
            w.daemon = Some(start_watch(&s, &[]));
        }
        let n = w.files.len() as i64;
        let deadline = Instant::now() + Duration::from_secs(40);
        while s.count_or_zero("SELECT count(*) FROM files") < n {
            prop_assert!(Instant::now() < deadline, "timed out: {n} files expected");
            std::thread::sleep(Duration::from_millis(50));
        }
        // A last crash right after the commits; a restart (here `ferry run`, the same recovery)
        // places what was committed but not yet moved.
        sigkill(&mut w.daemon.take().unwrap());
        let out = s.ferry(&["run"]);
        prop_assert_eq!(out.status.code(), Some(0));

        if n == 0 {
            return Ok(());
        }
        let rows = s.query("SELECT path, sha256, state, records FROM files ORDER BY path");
        prop_assert_eq!(rows.len() as i64, n, "one ledger row per file");
        let mut total = 0;
        for (row, (name, body)) in rows.iter().zip(&w.files) {
            prop_assert_eq!(row[0].as_deref(), Some(name.as_str()));
            prop_assert_eq!(row[1].clone(), Some(sha256_hex(body.as_bytes())), "{} read whole", name);
            prop_assert_eq!(row[2].as_deref(), Some("ingested"));
            let records = body.lines().count() - 1;
            prop_assert_eq!(row[3].clone(), Some(records.to_string()));
            total += records as i64;
        }
        prop_assert_eq!(s.count("SELECT count(*) FROM m"), total);
        prop_assert_eq!(s.count("SELECT count(*) FROM (SELECT DISTINCT n, r FROM m)"), total);
        prop_assert!(s.leftover_inputs().is_empty(), "{:?}", s.leftover_inputs());
    }
}
