//! `ferry export`: batches exactly once, never half-visible, byte-identical after a crash.

use crate::harness::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Final-named data files in a target folder, sorted (manifests, markers and temp files aside).
pub fn batch_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            !n.starts_with('.') && !n.ends_with(".manifest.json") && !n.ends_with(".done")
        })
        .collect();
    v.sort();
    v
}

/// The manifest beside a batch's data file.
pub fn manifest(data: &Path) -> Value {
    let mut m = data.as_os_str().to_owned();
    m.push(".manifest.json");
    serde_json::from_slice(&fs::read(m).unwrap()).unwrap()
}

/// A CSV batch's header and records.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().iter().map(str::to_string).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}

/// Checks every batch in `dir` against its manifest and the done marker; returns the records of
/// all batches in order, with each batch's id range.
pub fn check_batches(dir: &Path) -> (Vec<Vec<String>>, Vec<(i64, i64)>) {
    let mut all = Vec::new();
    let mut ranges = Vec::new();
    for f in batch_files(dir) {
        let m = manifest(&f);
        let bytes = fs::read(&f).unwrap();
        assert_eq!(m["sha256"], sha256_hex(&bytes), "{}", f.display());
        assert_eq!(m["bytes"], bytes.len() as u64);
        assert_eq!(m["file"], f.file_name().unwrap().to_str().unwrap());
        let mut done = f.as_os_str().to_owned();
        done.push(".done");
        assert!(
            Path::new(&done).exists(),
            "no done marker for {}",
            f.display()
        );
        let (_, rows) = read_csv(&f);
        assert_eq!(m["rows"], rows.len() as u64);
        let (first, last) = (
            m["first_record_id"].as_i64().unwrap(),
            m["last_record_id"].as_i64().unwrap(),
        );
        let stem = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            stem.contains(&format!("-{first:012}-{last:012}.")),
            "{stem}"
        );
        ranges.push((first, last));
        all.extend(rows);
    }
    (all, ranges)
}

/// No gaps and no overlaps between consecutive batches: each starts at the stored record right
/// after the previous batch's last, the first at the first stored record, and the last ends at
/// the last one (ids are dense in SQLite; in PostgreSQL they come in blocks, with gaps).
fn assert_contiguous(s: &Spool, ranges: &[(i64, i64)], records: i64) {
    let ids: Vec<i64> = s
        .query("SELECT _id FROM ev ORDER BY _id")
        .into_iter()
        .map(|r| r[0].as_ref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len() as i64, records, "stored records");
    let mut at = 0;
    for &(a, b) in ranges {
        assert_eq!(Some(&a), ids.get(at), "batches {ranges:?}");
        assert!(b >= a);
        at = ids.partition_point(|&id| id <= b);
    }
    assert_eq!(at, ids.len(), "batches {ranges:?}");
}

/// The highest stored record id of `ev`: where a complete export leaves the watermark.
fn last_id(s: &Spool) -> i64 {
    s.count("SELECT max(_id) FROM ev")
}

/// Drops `files` files of `rows` rows each into `incoming/ev/`, numbering records from `*next`.
pub fn drop_events(s: &Spool, tag: &str, files: usize, rows: usize, next: &mut u64) {
    for f in 0..files {
        let mut body = String::from("n,label\n");
        for _ in 0..rows {
            body.push_str(&format!("{next},\"label, {next}\"\n"));
            *next += 1;
        }
        s.drop_file(&format!("ev/{tag}-{f}.csv"), body.as_bytes());
    }
}

/// The exported records are the dataset's, each once, in stored (`_id`) order.
pub fn assert_in_stored_order(s: &Spool, rows: &[Vec<String>], total: u64) {
    let exported: Vec<u64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    let stored: Vec<u64> = s
        .query("SELECT n FROM ev ORDER BY _id")
        .into_iter()
        .map(|r| r[0].as_ref().unwrap().parse().unwrap())
        .collect();
    assert!(
        exported == stored,
        "exported records differ from the stored ones"
    );
    let mut sorted = exported;
    sorted.sort_unstable();
    sorted.dedup();
    assert!(
        sorted == (0..total).collect::<Vec<_>>(),
        "every record exactly once"
    );
}

/// Starts `ferry export ev` into `out` in batches of 10 that pause `pause_ms` after each, and
/// returns once its first batch is on disk.
fn start_slow_export(s: &Spool, out: &Path, pause_ms: u64) -> std::process::Child {
    let child = s
        .cmd()
        .args([
            "export",
            "ev",
            "--to",
            out.to_str().unwrap(),
            "--max-rows",
            "10",
        ])
        .env("FERRY_FAULT_EXPORT_PAUSE_MS", pause_ms.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while batch_files(out).is_empty() {
        assert!(Instant::now() < deadline, "the export never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn export_json(s: &Spool, args: &[&str]) -> Value {
    let mut a = vec!["export"];
    a.extend_from_slice(args);
    a.push("--json");
    s.json(&a)
}

both_stores! {
    fn exports_with_new_data_between_them_send_every_record_exactly_once() {
        let s = Spool::new();
        let out = s.scratch("out");
        let out_s = out.to_str().unwrap();
        let mut next = 0;
        for round in 0..5 {
            drop_events(&s, &format!("r{round}"), 3, 17 + round * 5, &mut next);
            s.ferry_ok(&["run"], 0);
            let sum = export_json(&s, &["ev", "--to", out_s, "--max-rows", "40"]);
            assert!(!sum["batches"].as_array().unwrap().is_empty());
        }
        // Nothing new: nothing written, still success.
        let sum = export_json(&s, &["ev", "--to", out_s, "--max-rows", "40"]);
        assert_eq!(sum["batches"].as_array().unwrap().len(), 0);
        assert_eq!(sum["watermark"], last_id(&s));

        let (rows, ranges) = check_batches(&out);
        assert_contiguous(&s, &ranges, next as i64);
        assert_in_stored_order(&s, &rows, next);
        assert!(rows.iter().all(|r| r[1] == format!("label, {}", r[0])));
        assert!(batch_files(&out).iter().all(|f| read_csv(f).1.len() <= 40));

        let list = s.json(&["export", "--list", "--json"]);
        assert_eq!(list[0]["dataset"], "ev");
        assert_eq!(list[0]["watermark"], last_id(&s));
        assert_eq!(list[0]["pending_records"], 0);
        assert_eq!(list[0]["exported_records"], next);
        drop_events(&s, "late", 1, 7, &mut next);
        s.ferry_ok(&["run"], 0);
        let status = s.json(&["status", "--json"]);
        assert_eq!(status["exports"][0]["pending_records"], 7);
    }
}

both_stores! {
    fn targets_keep_their_own_watermarks() {
        let s = Spool::new();
        let mut next = 0;
        drop_events(&s, "a", 2, 30, &mut next);
        s.ferry_ok(&["run"], 0);
        let a = s.scratch("a");
        let b = s.scratch("b");
        export_json(
            &s,
            &["ev", "--to", a.to_str().unwrap(), "--target", "warehouse"],
        );
        drop_events(&s, "b", 1, 10, &mut next);
        s.ferry_ok(&["run"], 0);
        // A new target starts from the beginning; the first one only gets what is new.
        export_json(
            &s,
            &["ev", "--to", b.to_str().unwrap(), "--target", "audit"],
        );
        let sum = export_json(
            &s,
            &["ev", "--to", a.to_str().unwrap(), "--target", "warehouse"],
        );
        assert_eq!(sum["rows"], 10);
        assert_eq!(check_batches(&a).0.len(), 70);
        assert_eq!(check_batches(&b).0.len(), 70);
        // The default target is <root>/outgoing/<dataset>.
        let sum = export_json(&s, &["ev"]);
        assert_eq!(sum["rows"], 70);
        assert_eq!(check_batches(&s.root.join("outgoing/ev")).0.len(), 70);
        let list = s.json(&["export", "--list", "--json"]);
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["target"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 3);
        assert!(names.contains(&"warehouse") && names.contains(&"audit"));
    }
}

both_stores! {
    fn a_crash_at_each_step_then_export_again_rewrites_the_same_bytes() {
        for point in ["planned", "data", "written"] {
            let s = Spool::new();
            let mut next = 0;
            drop_events(&s, "x", 2, 25, &mut next);
            s.ferry_ok(&["run"], 0);
            let out = s.scratch("out");
            let out_s = out.to_str().unwrap();
            let died = s
                .cmd()
                .args(["export", "ev", "--to", out_s, "--max-rows", "20"])
                .env("FERRY_FAULT_EXPORT_DIE", point)
                .output()
                .unwrap();
            assert_eq!(died.status.code(), Some(137), "{point}");
            let before = tree(&out);
            // Meanwhile a file with a new column arrives: the interrupted batch must not change.
            s.drop_file(
                "ev/late.csv",
                b"n,label,extra\n50,\"label, 50\",x\n51,\"label, 51\",y\n",
            );
            s.ferry_ok(&["run"], 0);
            // A stray temp file as an interrupted write leaves it.
            fs::write(
                out.join(".ev-000000000001-000000000020.csv.999.ferry-tmp"),
                b"n,la",
            )
            .unwrap();
            let sum = export_json(&s, &["ev", "--to", out_s, "--max-rows", "20"]);
            assert_eq!(sum["stray_temp_files_removed"], 1);
            // The interrupted export had planned its first batch: this one rewrites exactly it.
            assert_eq!(sum["batches"][0]["resumed"], true, "{point}");
            let after = tree(&out);
            for (name, hash) in &before {
                assert_eq!(
                    after.get(name),
                    Some(hash),
                    "{point}: {name} rewritten differently"
                );
            }
            assert!(after.keys().all(|k| !k.starts_with('.')), "{after:?}");
            let (rows, ranges) = check_batches(&out);
            assert_contiguous(&s, &ranges, 52);
            let ids: Vec<i64> = s
                .query("SELECT _id FROM ev ORDER BY _id")
                .into_iter()
                .map(|r| r[0].as_ref().unwrap().parse().unwrap())
                .collect();
            let want: Vec<(i64, i64)> = ids.chunks(20).map(|c| (c[0], c[c.len() - 1])).collect();
            assert_eq!(ranges, want);
            assert_eq!(rows.len(), 52);
            let batches = batch_files(&out);
            assert_eq!(
                manifest(&batches[0])["columns"],
                serde_json::json!(["n", "label"])
            );
            assert_eq!(
                manifest(&batches[2])["columns"],
                serde_json::json!(["n", "label", "extra"])
            );
        }
    }
}

both_stores! {
    fn kill_9_at_random_moments_then_the_union_of_batches_is_the_dataset() {
        let s = Spool::new();
        let mut next = 0;
        drop_events(&s, "k", 10, 500, &mut next);
        s.ferry_ok(&["run"], 0);
        let out = s.scratch("out");
        let out_s = out.to_str().unwrap().to_string();
        kill_exports_then_finish(&s, &["export", "ev", "--to", &out_s, "--max-rows", "97"], &out, 40, 60);
        let (rows, ranges) = check_batches(&out);
        assert_contiguous(&s, &ranges, 5000);
        assert_in_stored_order(&s, &rows, 5000);
    }
}

/// Runs the export `args` again and again, killing it (SIGKILL) after up to `within_ms`, at most
/// `tries` times or until one finishes; then to the end. A final-named file never changes after
/// it first appeared, and no temp file is left.
pub fn kill_exports_then_finish(
    s: &Spool,
    args: &[&str],
    out: &Path,
    tries: usize,
    within_ms: u64,
) {
    kill_exports_then_finish_at(s, args, &|| tree(out), tries, within_ms);
}

/// `kill_exports_then_finish` for any place: `files` lists what is there (name → SHA-256).
pub fn kill_exports_then_finish_at(
    s: &Spool,
    args: &[&str],
    files: &dyn Fn() -> BTreeMap<String, String>,
    tries: usize,
    within_ms: u64,
) {
    let mut rng = Rng::from_time();
    // First sight of each final-named file: it must never change afterwards.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let check = |seen: &mut BTreeMap<String, String>| {
        for (name, hash) in files() {
            if !name.starts_with('.') {
                let first = seen.entry(name.clone()).or_insert(hash.clone());
                assert_eq!(*first, hash, "{name} changed after it appeared");
            }
        }
    };
    for _ in 0..tries {
        let mut child = s
            .cmd()
            .args(args)
            .env("FERRY_FAULT_EXPORT_PAUSE_MS", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(within_ms)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        check(&mut seen);
        if status.success() {
            break;
        }
    }
    // Once to finish what is left, once more to find nothing left.
    s.ferry_ok(args, 0);
    s.ferry_ok(args, 0);
    check(&mut seen);
    // A server may still be finishing a killed client's upload (its session process creates
    // the temp name after the next export listed the folder): the export after that removes it.
    std::thread::sleep(Duration::from_millis(500));
    s.ferry_ok(args, 0);
    let left = files();
    assert!(left.keys().all(|k| !k.starts_with('.')), "{left:?}");
}

both_stores! {
    fn a_reader_never_sees_a_partial_file_under_a_final_name() {
        let s = Spool::new();
        let mut next = 0;
        drop_events(&s, "w", 8, 2500, &mut next);
        s.ferry_ok(&["run"], 0);
        let out = s.scratch("out");
        let stop = std::sync::atomic::AtomicBool::new(false);
        let first_sight = std::thread::scope(|sc| {
            let reader = sc.spawn(|| {
                let mut first: BTreeMap<PathBuf, String> = BTreeMap::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    for f in batch_files(&out) {
                        if let std::collections::btree_map::Entry::Vacant(e) = first.entry(f) {
                            if let Ok(bytes) = fs::read(e.key()) {
                                e.insert(sha256_hex(&bytes));
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                first
            });
            s.ferry_ok(
                &[
                    "export",
                    "ev",
                    "--to",
                    out.to_str().unwrap(),
                    "--max-rows",
                    "500",
                ],
                0,
            );
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            reader.join().unwrap()
        });
        assert_eq!(first_sight.len(), 40, "the reader saw every batch");
        for (f, hash) in &first_sight {
            assert_eq!(
                manifest(f)["sha256"],
                *hash,
                "{} read half-written",
                f.display()
            );
        }
    }
}

both_stores! {
    fn a_second_export_to_the_same_target_is_refused_not_interleaved() {
        let s = Spool::new();
        let mut next = 0;
        drop_events(&s, "l", 4, 100, &mut next);
        s.ferry_ok(&["run"], 0);
        let out = s.scratch("out");
        let out_s = out.to_str().unwrap();
        let mut slow = start_slow_export(&s, &out, 100);
        let refused = s.ferry(&["export", "ev", "--to", out_s, "--max-rows", "10"]);
        assert_eq!(refused.status.code(), Some(4));
        // Another target is independent.
        let other = s.scratch("other");
        s.ferry_ok(&["export", "ev", "--to", other.to_str().unwrap()], 0);
        assert!(slow.wait().unwrap().success());
        let (rows, ranges) = check_batches(&out);
        assert_contiguous(&s, &ranges, 400);
        assert_eq!(rows.len(), 400);
    }
}

/// The data columns of a table in stored order, as text.
fn data_rows(s: &Spool, table: &str) -> Vec<Vec<Option<String>>> {
    let cols: Vec<String> = s
        .columns(table)
        .into_iter()
        .filter(|c| !c.starts_with('_'))
        .map(|c| format!("\"{c}\""))
        .collect();
    s.query(&format!(
        "SELECT {} FROM \"{table}\" ORDER BY _id",
        cols.join(", ")
    ))
}

both_stores! {
    fn exported_batches_ingest_back_into_the_same_records() {
        let src = Spool::new();
        src.ferry_ok(
            &[
                "run",
                "--keep",
                fixtures().join("incoming").to_str().unwrap(),
            ],
            3,
        );
        for (format, gzip) in [("csv", false), ("ndjson", false), ("csv", true)] {
            let dst = Spool::new();
            let into = dst.incoming().join("customers");
            let target = format!("rt-{format}-{gzip}");
            let mut args = vec![
                "export",
                "customers",
                "--to",
                into.to_str().unwrap(),
                "--format",
                format,
                "--target",
                &target,
            ];
            if gzip {
                args.push("--gzip");
            }
            src.ferry_ok(&args, 0);
            // Manifests and markers are not data: the receiving side ignores them.
            fs::write(
                dst.root.join("ferry.toml"),
                "[ready]\nsettle = \"0s\"\nignore = [\"*.manifest.json\", \"*.done\"]\n",
            )
            .unwrap();
            dst.ferry_ok(&["run"], 0);
            assert_eq!(
                data_rows(&dst, "customers"),
                data_rows(&src, "customers"),
                "{format} gzip={gzip}"
            );
        }
    }
}

both_stores! {
    fn typed_records_round_trip_in_their_canonical_form() {
        let config = fixtures().join("typed/ferry.toml");
        let config = config.to_str().unwrap();
        let src = Spool::new();
        let out = src.ferry(&[
            "--config",
            config,
            "run",
            "--keep",
            fixtures().join("typed/incoming").to_str().unwrap(),
        ]);
        assert!(out.status.code().unwrap() <= 3);
        assert!(src.count("SELECT count(*) FROM vehicles") > 10);
        for format in ["csv", "ndjson"] {
            let dst = Spool::new();
            let into = dst.incoming().join("vehicles");
            src.ferry_ok(
                &[
                    "--config",
                    config,
                    "export",
                    "vehicles",
                    "--to",
                    into.to_str().unwrap(),
                    "--format",
                    format,
                    "--target",
                    format,
                ],
                0,
            );
            for f in fs::read_dir(&into).unwrap().flatten() {
                let n = f.file_name().to_string_lossy().into_owned();
                if n.ends_with(".manifest.json") || n.ends_with(".done") {
                    fs::remove_file(f.path()).unwrap();
                } else {
                    backdate(&f.path());
                }
            }
            dst.ferry_ok(&["--config", config, "run"], 0);
            assert_eq!(
                data_rows(&dst, "vehicles"),
                data_rows(&src, "vehicles"),
                "{format}"
            );
            let types = if src.is_postgres() {
                "SELECT pg_typeof(year)::text, pg_typeof(price)::text FROM vehicles LIMIT 1"
            } else {
                "SELECT typeof(year), typeof(price) FROM vehicles LIMIT 1"
            };
            assert_eq!(dst.query(types), src.query(types));
        }
    }
}

both_stores! {
    fn exports_while_a_daemon_ingests_miss_nothing_and_repeat_nothing() {
        let s = Spool::new();
        let mut daemon = start_watch(&s, &[]);
        let out = s.scratch("out");
        let out_s = out.to_str().unwrap();
        let staging = s.scratch("staging");
        let total: u64 = 60 * 40;
        std::thread::scope(|sc| {
            sc.spawn(|| {
                fs::create_dir_all(s.incoming().join("ev")).unwrap();
                for f in 0..60u64 {
                    let body: String = (0..40)
                        .map(|r| format!("{},\"label, {}\"\n", f * 40 + r, f * 40 + r))
                        .collect();
                    let tmp = staging.join(format!("f{f}.csv"));
                    fs::write(&tmp, format!("n,label\n{body}")).unwrap();
                    fs::rename(&tmp, s.incoming().join(format!("ev/f{f:03}.csv"))).unwrap();
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            // Export over and over while files arrive.
            let deadline = Instant::now() + Duration::from_secs(30);
            while s.count_or_zero("SELECT count(*) FROM files") < 60 {
                assert!(
                    Instant::now() < deadline,
                    "the daemon did not take every file"
                );
                let out = s.ferry(&["export", "ev", "--to", out_s, "--max-rows", "64"]);
                // 2: no `ev` dataset yet.
                assert!(matches!(out.status.code(), Some(0 | 2)), "{out:?}");
            }
        });
        s.ferry_ok(&["export", "ev", "--to", out_s, "--max-rows", "64"], 0);
        assert_eq!(sigterm(&mut daemon), Some(0));
        let (rows, ranges) = check_batches(&out);
        assert_contiguous(&s, &ranges, total as i64);
        assert_in_stored_order(&s, &rows, total);
    }
}

both_stores! {
    fn a_column_added_during_a_long_export_is_in_the_batches_planned_after_it() {
        let s = Spool::new();
        let mut next = 0;
        drop_events(&s, "d", 1, 30, &mut next);
        s.ferry_ok(&["run"], 0);
        let out = s.scratch("out");
        let mut slow = start_slow_export(&s, &out, 400);
        s.drop_file(
            "ev/wider.csv",
            b"n,label,extra\n30,\"label, 30\",x30\n31,\"label, 31\",x31\n",
        );
        s.ferry_ok(&["run"], 0);
        assert!(slow.wait().unwrap().success());
        let last = batch_files(&out).pop().unwrap();
        let (header, rows) = read_csv(&last);
        assert_eq!(header, ["n", "label", "extra"]);
        assert_eq!(rows.last().unwrap(), &["31", "label, 31", "x31"]);
        let (all, ranges) = check_batches(&out);
        assert_contiguous(&s, &ranges, 32);
        assert_in_stored_order(&s, &all, 32);
    }
}
