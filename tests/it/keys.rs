//! Record keys (R-record-key): `on_key` skip, update (with and without a version) and reject;
//! key definitions that change; the dry run's counts; exports of updated records; a writer
//! killed halfway through an updating file.

use crate::harness::*;
use serde_json::Value;
use std::fs;

/// An orders dataset keyed on `id`, as `on_key` and `version` say.
fn orders(s: &Spool, on_key: &str, version: bool, extra: &str) {
    let version = if version { "version = \"v\"\n" } else { "" };
    fs::write(
        s.root.join("ferry.toml"),
        format!(
            "[[dataset]]\nname = \"orders\"\nmatch = \"orders/**\"\nkey = [\"id\"]\n\
             on_key = \"{on_key}\"\n{version}{extra}\
             columns = [\n  {{ name = \"id\", type = \"int\" }},\n  \
             {{ name = \"status\", type = \"string\" }},\n  {{ name = \"v\", type = \"int\" }},\n]\n"
        ),
    )
    .unwrap();
}

/// `id,status,v` rows as a CSV file.
fn csv(rows: &[(i64, &str, i64)]) -> String {
    let mut s = String::from("id,status,v\n");
    for (id, st, v) in rows {
        s.push_str(&format!("{id},{st},{v}\n"));
    }
    s
}

/// The table as `id|status|v` lines, by id.
fn table(s: &Spool) -> Vec<String> {
    s.query("SELECT id, status, v FROM orders ORDER BY id")
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| v.unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

/// Four corrections of overlapping orders; every key's versions differ, or repeat the same
/// record. Within `c` one key comes twice (the greater version later, then an older one).
fn corrections() -> Vec<(&'static str, String)> {
    vec![
        (
            "a",
            csv(&[(1, "new", 1), (2, "new", 1), (3, "new", 1), (4, "new", 1)]),
        ),
        (
            "b",
            csv(&[(1, "paid", 3), (2, "paid", 2), (5, "new", 1), (3, "new", 1)]),
        ),
        (
            "c",
            csv(&[
                (1, "shipped", 4),
                (2, "lost", 5),
                (2, "late", 4),
                (6, "new", 2),
            ]),
        ),
        ("d", csv(&[(1, "paid", 2), (3, "void", 9), (6, "old", 1)])),
    ]
}

fn final_table() -> Vec<String> {
    [
        "1|shipped|4",
        "2|lost|5",
        "3|void|9",
        "4|new|1",
        "5|new|1",
        "6|new|2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

both_stores! {
    fn versions_decide_the_final_table_whatever_order_files_arrive_in() {
        let files = corrections();
        // Discovery order is by name: each order of the four files, as one run and file by file.
        for (k, order) in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]]
            .iter()
            .enumerate()
        {
            let s = Spool::new();
            orders(&s, "update", true, "");
            for (pos, &i) in order.iter().enumerate() {
                let (name, body) = &files[i];
                s.drop_file(&format!("orders/{pos}-{name}.csv"), body.as_bytes());
                if k % 2 == 1 {
                    s.ferry_ok(&["run"], 0);
                }
            }
            if k % 2 == 0 {
                s.ferry_ok(&["run"], 0);
            }
            assert_eq!(table(&s), final_table(), "order {order:?}");
            // Every record read is written, a duplicate, or both counted: nothing lost.
            let files = s.files();
            let sum = |f: &str| files.iter().map(|r| r[f].as_i64().unwrap()).sum::<i64>();
            assert_eq!(sum("records") + sum("duplicate_records"), 15);
            // One row per key, each from the file that holds its greatest version.
            assert_eq!(s.count("SELECT count(*) FROM orders"), 6);
            assert_eq!(sum("records") - sum("updated_records"), 6);
        }
    }
}

#[test]
fn versions_decide_across_two_hosts_storing_at_once() {
    on(Backend::Postgres, || {
        let a = Spool::new();
        let b = a.another_host();
        for s in [&a, &b] {
            orders(s, "update", true, "");
        }
        // Many files of overlapping keys, split between the hosts, run at the same time.
        let mut rng = Rng::new(7);
        let mut best: std::collections::BTreeMap<i64, (i64, String)> = Default::default();
        for f in 0..24 {
            let rows: Vec<(i64, String, i64)> = (0..200)
                .map(|_| {
                    let id = rng.below(300) as i64;
                    // Versions unique per key: the file and the row make them.
                    let v = (f * 1000 + rng.below(1000)) as i64 * 300 + id;
                    (id, format!("s{v}"), v)
                })
                .collect();
            for (id, st, v) in &rows {
                if best.get(id).is_none_or(|(bv, _)| v > bv) {
                    best.insert(*id, (*v, st.clone()));
                }
            }
            let body = csv(&rows
                .iter()
                .map(|(i, s, v)| (*i, s.as_str(), *v))
                .collect::<Vec<_>>());
            let host = if f % 2 == 0 { &a } else { &b };
            host.drop_file(&format!("orders/f{f:02}.csv"), body.as_bytes());
        }
        let mut runs: Vec<_> = [&a, &b]
            .iter()
            .map(|s| s.cmd().arg("run").spawn().unwrap())
            .collect();
        for r in &mut runs {
            assert!(r.wait().unwrap().success());
        }
        let want: Vec<String> = best
            .iter()
            .map(|(id, (v, st))| format!("{id}|{st}|{v}"))
            .collect();
        assert_eq!(table(&a), want);
    })
}

both_stores! {
    fn without_a_version_the_latest_file_wins_and_equal_records_change_nothing() {
        let s = Spool::new();
        orders(&s, "update", false, "");
        s.drop_file("orders/1.csv", csv(&[(1, "new", 1), (2, "new", 1), (3, "new", 1)]).as_bytes());
        s.ferry_ok(&["run"], 0);
        let before = s.count("SELECT max(_id) FROM orders");
        // 1 is sent again unchanged, 2 corrected twice in the file (the later line wins).
        s.drop_file(
            "orders/2.csv",
            csv(&[(1, "new", 1), (2, "paid", 1), (2, "shipped", 1), (4, "new", 1)]).as_bytes(),
        );
        s.ferry_ok(&["run"], 0);
        assert_eq!(table(&s), ["1|new|1", "2|shipped|1", "3|new|1", "4|new|1"]);
        let f = &s.files_by_path()["orders/2.csv"];
        assert_eq!(
            (&f["records"], &f["updated_records"], &f["duplicate_records"]),
            (&Value::from(3), &Value::from(2), &Value::from(1))
        );
        // The record left alone keeps its id; the corrected one has a new id, after the rest.
        assert_eq!(s.count("SELECT _id FROM orders WHERE id = 1"), 1);
        assert!(s.count("SELECT _id FROM orders WHERE id = 2") > before);
        // The record shows which file last wrote it.
        let by: Vec<Vec<Option<String>>> = s.query(
            "SELECT f.path, o._line FROM orders o JOIN files f ON f.id = o._file_id WHERE o.id = 2",
        );
        assert_eq!(by, [[Some("orders/2.csv".into()), Some("4".into())]]);
    }
}

both_stores! {
    fn reject_mode_sets_records_with_a_stored_key_aside_against_max_bad_records() {
        let s = Spool::new();
        orders(&s, "reject", false, "max_bad_records = 1\n");
        s.drop_file("orders/1.csv", csv(&[(1, "new", 1), (2, "new", 1)]).as_bytes());
        s.ferry_ok(&["run"], 0);
        // One stored key: within the limit.
        s.drop_file("orders/2.csv", csv(&[(3, "new", 1), (1, "again", 2)]).as_bytes());
        s.ferry_ok(&["run"], 0);
        let f = &s.files_by_path()["orders/2.csv"];
        assert_eq!((&f["records"], &f["rejected"]), (&Value::from(1), &Value::from(1)));
        let shown = s.json(&["quarantine", "show", &f["id"].to_string(), "--json"]);
        let r = &shown["rejects"][0];
        assert_eq!(r["kind"], "record.key_exists");
        assert_eq!(r["line"], 3);
        // Two: over the limit, the file is quarantined and stores nothing.
        s.drop_file("orders/3.csv", csv(&[(2, "x", 1), (4, "new", 1), (4, "twice", 1)]).as_bytes());
        s.ferry_ok(&["run"], 3);
        let q = &s.files_by_path()["orders/3.csv"];
        assert_eq!(q["state"], "quarantined");
        assert_eq!(q["error_kind"], "too_many_bad_records");
        assert_eq!(table(&s), ["1|new|1", "2|new|1", "3|new|1"]);
        assert!(s.root.join("quarantine/orders/3.csv.reason.json").exists());
    }
}

both_stores! {
    fn a_changed_key_re_keys_the_stored_records_and_never_doubles() {
        let s = Spool::new();
        let config = |key: &str| {
            fs::write(
                s.root.join("ferry.toml"),
                format!(
                    "[[dataset]]\nname = \"stock\"\nmatch = \"stock/**\"\nkey = [{key}]\n\
                     columns = [\n  {{ name = \"sku\", type = \"string\", case = \"upper\" }},\n  \
                     {{ name = \"site\", type = \"string\" }},\n  {{ name = \"qty\", type = \"int\" }},\n]\n"
                ),
            )
            .unwrap()
        };
        config("\"sku\"");
        let first = "sku,site,qty\nA1,north,5\nB2,north,7\n";
        s.drop_file("stock/1.csv", first.as_bytes());
        s.ferry_ok(&["run"], 0);
        // The key becomes (sku, site): the stored records are re-keyed before the next file.
        config("\"sku\", \"site\"");
        s.drop_file("stock/2.csv", b"sku,site,qty\na1,south,1\nA1,north,9\nB2,south,2\n");
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM stock"), 4);
        let f = &s.files_by_path()["stock/2.csv"];
        assert_eq!((&f["records"], &f["duplicate_records"]), (&Value::from(2), &Value::from(1)));
        // The first file's keys again, other quantities: every key is stored already.
        s.drop_file("stock/3.csv", b"sku,site,qty\nA1,north,6\nB2,north,8\n");
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM stock"), 4);
        let status = s.json(&["status", "--json"]);
        assert_eq!(status["keys"][0]["key"], "(sku (upper case), site)");
        assert_eq!(status["keys"][0]["indexed"], 4);
        assert_eq!(status["keys"][0]["tail"], 0);
    }
}

both_stores! {
    fn a_key_new_to_a_table_with_duplicates_refuses_the_dataset_until_rekey_resolves_it() {
        let s = Spool::new();
        // Loaded without a key: two records of sku A1.
        s.drop_file("stock/1.csv", b"sku,qty\nA1,5\nB2,7\nA1,6\n");
        s.ferry_ok(&["run"], 0);
        fs::write(
            s.root.join("ferry.toml"),
            "[[dataset]]\nname = \"stock\"\nmatch = \"stock/**\"\nkey = [\"sku\"]\n",
        )
        .unwrap();
        s.drop_file("stock/2.csv", b"sku,qty\nC3,1\n");
        s.ferry_ok(&["run"], 3);
        let q = &s.files_by_path()["stock/2.csv"];
        assert_eq!(q["error_kind"], "schema.key_conflict");
        let message = q["error_message"].as_str().unwrap();
        assert!(message.contains("1 record shares a key"), "{message}");
        assert!(message.contains("ferry rekey stock --keep"), "{message}");
        // Nothing changed in the table.
        assert_eq!(s.count("SELECT count(*) FROM stock"), 3);
        // A dry run of the rekey says the same and changes nothing.
        let out = s.ferry_ok(&["rekey", "stock", "--dry-run", "--json"], 2);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["records"], 3);
        assert!(report["conflict"].as_str().unwrap().contains("sku=\"A1\""));
        // Keeping the latest of each key resolves it; the quarantined file then loads.
        let done = s.json(&["rekey", "stock", "--keep", "latest", "--json"]);
        assert_eq!(done["removed"], 1);
        assert_eq!(
            s.query("SELECT sku, qty FROM stock ORDER BY sku"),
            [
                [Some("A1".into()), Some("6".into())],
                [Some("B2".into()), Some("7".into())]
            ]
        );
        s.ferry_ok(&["quarantine", "retry", "--all"], 0);
        s.drop_file("stock/3.csv", b"sku,qty\nA1,9\nD4,1\n");
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM stock"), 4);
        // Removing the key is recorded: the same key loads twice again, by choice.
        fs::remove_file(s.root.join("ferry.toml")).unwrap();
        s.drop_file("stock/4.csv", b"sku,qty\nA1,1\n");
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM stock WHERE sku = 'A1'"), 2);
        assert_eq!(s.json(&["status", "--json"])["keys"], Value::Array(vec![]));
    }
}

both_stores! {
    fn a_writer_killed_halfway_through_an_updating_file_leaves_the_table_as_before_it() {
        let s = Spool::new();
        orders(&s, "update", true, "");
        let n = 30_000;
        let base: Vec<(i64, &str, i64)> = (0..n).map(|i| (i, "new", 1)).collect();
        s.drop_file("orders/1-base.csv", csv(&base).as_bytes());
        s.ferry_ok(&["run"], 0);
        let before = s.records_with_paths("orders");
        // Every record corrected: a file of several chunks, updates from the first one.
        let fix: Vec<(i64, &str, i64)> = (0..n).map(|i| (i, "paid", 2)).collect();
        s.drop_file("orders/2-fix.csv", csv(&fix).as_bytes());
        let out = s
            .cmd()
            .arg("run")
            .env("FERRY_FAULT_ABORT_STORING", "2-fix:2")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert_eq!(s.records_with_paths("orders"), before);
        // The next run takes the file up again, whole.
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM orders WHERE status = 'paid'"), n);
        assert_eq!(s.count("SELECT count(*) FROM orders"), n);
        let f = &s.files_by_path()["orders/2-fix.csv"];
        assert_eq!(f["updated_records"], n);
    }
}

both_stores! {
    fn a_dry_run_counts_updates_duplicates_and_key_rejects_as_the_run_does() {
        for on_key in ["skip", "update", "reject"] {
            let s = Spool::new();
            orders(&s, on_key, on_key == "update", "max_bad_records = \"50%\"\n");
            let files = corrections();
            s.drop_file("orders/0.csv", files[0].1.as_bytes());
            s.ferry_ok(&["run"], 0);
            for (name, body) in &files[1..] {
                s.drop_file(&format!("orders/{name}.csv"), body.as_bytes());
            }
            let (_, dry) = json_any(&s, &["run", "--dry-run", "--json"]);
            let (_, run) = json_any(&s, &["run", "--json"]);
            // Per file: the outcome, and for an ingested one its counts.
            let counts = |v: &Value, list: &str| -> Vec<(String, String, [i64; 4])> {
                v[list]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| {
                        let outcome = f["outcome"].as_str().unwrap().trim_end_matches('d');
                        let n = |k: &str| f[k].as_i64().unwrap();
                        let c = if outcome.starts_with("ingest") {
                            [
                                n("records"),
                                n("updated_records"),
                                n("duplicate_records"),
                                n("rejected_records"),
                            ]
                        } else {
                            [0; 4]
                        };
                        (
                            f["path"].as_str().unwrap().to_string(),
                            outcome.trim_end_matches('e').to_string(),
                            c,
                        )
                    })
                    .collect()
            };
            assert_eq!(counts(&dry, "verdicts"), counts(&run, "files"), "on_key = {on_key}");
            assert!(!counts(&run, "files").is_empty());
        }
    }
}

both_stores! {
    fn exports_carry_updated_records_after_the_watermark() {
        let s = Spool::new();
        orders(&s, "update", true, "");
        s.drop_file("orders/1.csv", csv(&[(1, "new", 1), (2, "new", 1), (3, "new", 1)]).as_bytes());
        s.ferry_ok(&["run"], 0);
        let out = s.scratch("out");
        let to = out.to_str().unwrap();
        s.ferry_ok(&["export", "orders", "--to", to, "--format", "ndjson"], 0);
        s.drop_file("orders/2.csv", csv(&[(2, "paid", 2), (3, "new", 1), (4, "new", 1)]).as_bytes());
        s.ferry_ok(&["run"], 0);
        s.ferry_ok(&["export", "orders", "--to", to, "--format", "ndjson"], 0);
        // Applied in batch order, latest record id per key: the table.
        let mut names: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".ndjson"))
            .collect();
        names.sort();
        assert_eq!(names.len(), 2);
        let second = fs::read_to_string(out.join(&names[1])).unwrap();
        let ids: Vec<i64> = second
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_i64().unwrap())
            .collect();
        // Only what changed: the updated record and the new one.
        assert_eq!(ids, [2, 4]);
        let mut applied: std::collections::BTreeMap<i64, String> = Default::default();
        for n in &names {
            for l in fs::read_to_string(out.join(n)).unwrap().lines() {
                let r: Value = serde_json::from_str(l).unwrap();
                applied.insert(
                    r["id"].as_i64().unwrap(),
                    format!("{}|{}|{}", r["id"], r["status"].as_str().unwrap(), r["v"]),
                );
            }
        }
        assert_eq!(applied.into_values().collect::<Vec<_>>(), table(&s));
    }
}

#[test]
fn a_table_keyed_by_an_earlier_ferry_gets_its_index_from_its_records() {
    let s = Spool::new();
    orders(&s, "skip", false, "");
    s.drop_file(
        "orders/1.csv",
        csv(&[(1, "new", 1), (2, "new", 1)]).as_bytes(),
    );
    s.ferry_ok(&["run"], 0);
    // As an earlier ferry left it: keyed records, no definition, no index.
    s.db()
        .execute_batch(
            "DELETE FROM ferry_keys; DELETE FROM ferry_key_runs; DELETE FROM ferry_key_slices;",
        )
        .unwrap();
    s.drop_file(
        "orders/2.csv",
        csv(&[(2, "again", 1), (3, "new", 1)]).as_bytes(),
    );
    s.ferry_ok(&["run"], 0);
    assert_eq!(table(&s), ["1|new|1", "2|new|1", "3|new|1"]);
    assert_eq!(s.files_by_path()["orders/2.csv"]["duplicate_records"], 1);
}

/// Applies every published batch in `dir` in name order, rows in file order, a later row of a
/// key replacing the earlier: the upsert a downstream system makes of the stream.
fn applied(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ndjson") && dir.join(format!("{n}.done")).exists())
        .collect();
    names.sort();
    let mut latest: std::collections::BTreeMap<i64, String> = Default::default();
    for n in &names {
        for l in fs::read_to_string(dir.join(n)).unwrap().lines() {
            let r: Value = serde_json::from_str(l).unwrap();
            let line = format!("{}|{}|{}", r["id"], r["status"].as_str().unwrap(), r["v"]);
            latest.insert(r["id"].as_i64().unwrap(), line);
        }
    }
    latest.into_values().collect()
}

both_stores! {
    fn an_export_interrupted_while_records_are_replaced_repeats_nothing_and_misses_nothing() {
        for die in ["planned", "written"] {
            let s = Spool::new();
            orders(&s, "update", true, "");
            s.drop_file("orders/1.csv", csv(&[(1, "new", 1), (2, "new", 1), (3, "new", 1)]).as_bytes());
            s.ferry_ok(&["run"], 0);
            let out = s.scratch("out");
            let to = out.to_str().unwrap();
            let args = ["export", "orders", "--to", to, "--format", "ndjson"];
            let dead = s.cmd().args(args).env("FERRY_FAULT_EXPORT_DIE", die).output().unwrap();
            assert!(!dead.status.success());
            // Records of the planned batch are replaced before the export runs again.
            s.drop_file("orders/2.csv", csv(&[(2, "paid", 2), (3, "void", 2)]).as_bytes());
            s.ferry_ok(&["run"], 0);
            s.ferry_ok(&args, 0);
            assert_eq!(applied(&out), table(&s), "died at {die}");
            // Each version of a record is in one batch at most.
            let mut seen = std::collections::HashSet::new();
            for e in fs::read_dir(&out).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "ndjson") {
                    for l in fs::read_to_string(&p).unwrap().lines() {
                        assert!(seen.insert(l.to_string()), "{l} twice");
                    }
                }
            }
            // The manifests say what the files hold.
            for e in fs::read_dir(&out).unwrap() {
                let p = e.unwrap().path();
                if p.to_string_lossy().ends_with(".manifest.json") {
                    let m: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
                    let data = fs::read_to_string(out.join(m["file"].as_str().unwrap())).unwrap();
                    assert_eq!(m["rows"], data.lines().count());
                }
            }
        }
    }
}

/// Corrections of records stored far apart — ids in more clusters than one statement reads by
/// range — are compared, replaced and kept exactly by the statement that looks ids up one by
/// one (a 1,000-row correction of a 10 M-row table read all of it before).
#[test]
fn corrections_of_records_stored_far_apart_are_compared_and_replaced_exactly() {
    on(Backend::Postgres, || {
        let s = Spool::new();
        orders(&s, "update", true, "");
        for i in 0..40 {
            s.drop_file(
                &format!("orders/o{i:02}.csv"),
                csv(&[(i, "new", 1)]).as_bytes(),
            );
            s.ferry_ok(&["run"], 0);
            // Other datasets and hosts took ids meanwhile.
            s.query("SELECT setval('ferry_record_ids', nextval('ferry_record_ids') + 10 * 65536)");
        }
        let ids = s.query("SELECT _id FROM orders ORDER BY _id");
        let ids: Vec<i64> = ids
            .iter()
            .map(|r| r[0].as_ref().unwrap().parse().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[1] - w[0] > 10 * 65536), "{ids:?}");
        // Even ids get a greater version, odd ones come again as they are.
        let fix: Vec<(i64, &str, i64)> = (0..40)
            .map(|i| {
                if i % 2 == 0 {
                    (i, "paid", 2)
                } else {
                    (i, "new", 1)
                }
            })
            .collect();
        s.drop_file("orders/fix.csv", csv(&fix).as_bytes());
        s.ferry_ok(&["run"], 0);
        let want: Vec<String> = fix
            .iter()
            .map(|(i, st, v)| format!("{i}|{st}|{v}"))
            .collect();
        assert_eq!(table(&s), want);
        let fixed = "FROM files WHERE path LIKE '%fix.csv'";
        assert_eq!(s.count(&format!("SELECT updated_records {fixed}")), 20);
        assert_eq!(s.count(&format!("SELECT duplicate_records {fixed}")), 20);
    })
}

both_stores! {
    /// Records replaced twice in one file — early in it, then again chunks later — leave one
    /// record per key, the last: replaced records are deleted at the file's end on PostgreSQL.
    fn a_key_corrected_twice_in_one_long_file_leaves_one_record_per_key() {
        let s = Spool::new();
        orders(&s, "update", true, "");
        let first: Vec<(i64, &str, i64)> = (0..100).map(|i| (i, "new", 1)).collect();
        s.drop_file("orders/a.csv", csv(&first).as_bytes());
        s.ferry_ok(&["run"], 0);
        let mut rows: Vec<(i64, &str, i64)> = (0..100).map(|i| (i, "paid", 2)).collect();
        rows.extend((1000..31_000).map(|i| (i, "new", 1)));
        rows.extend((0..100).map(|i| (i, "shipped", 3)));
        s.drop_file("orders/b.csv", csv(&rows).as_bytes());
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM orders"), 30_100);
        assert_eq!(s.count("SELECT count(*) FROM orders WHERE status = 'shipped' AND v = 3"), 100);
        assert_eq!(s.count("SELECT count(DISTINCT id) FROM orders"), 30_100);
    }
}

/// A file replacing more records than are held for one delete (65,536) deletes them in steps
/// within the file and still leaves one record per key.
#[test]
fn a_file_replacing_more_records_than_one_delete_holds_leaves_one_record_per_key() {
    on(Backend::Postgres, || {
        let s = Spool::new();
        orders(&s, "update", true, "");
        let n = 70_000;
        let first: Vec<(i64, &str, i64)> = (0..n).map(|i| (i, "new", 1)).collect();
        s.drop_file("orders/a.csv", csv(&first).as_bytes());
        s.ferry_ok(&["run"], 0);
        let again: Vec<(i64, &str, i64)> = (0..n).map(|i| (i, "paid", 2)).collect();
        s.drop_file("orders/b.csv", csv(&again).as_bytes());
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM orders"), n);
        assert_eq!(
            s.count("SELECT count(*) FROM orders WHERE status = 'paid'"),
            n
        );
        let b = "FROM files WHERE path LIKE '%b.csv'";
        assert_eq!(s.count(&format!("SELECT updated_records {b}")), n);
    })
}

both_stores! {
    /// Versions compare by value in their type, never by their text: `10` is greater than
    /// `9.99`, `-10` less than `-1.5`, `2.5` equal to `2.50`; a datetime by its instant,
    /// whatever its offset.
    fn versions_compare_by_value_not_by_their_text() {
        for (ty, rows_a, rows_b) in [
            (
                "decimal",
                ["9.99", "-1.5", "2.50"],
                ["10", "-10", "2.5"],
            ),
            (
                "datetime",
                [
                    "2026-01-01T09:59:59Z",
                    "2026-01-01T00:00:00Z",
                    "2026-01-01T01:00:00Z",
                ],
                [
                    "2026-01-01T11:00:00+01:00",
                    "2026-01-01T00:30:00+01:00",
                    "2026-01-01T02:00:00+01:00",
                ],
            ),
        ] {
            let s = Spool::new();
            fs::write(
                s.root.join("ferry.toml"),
                format!(
                    "[[dataset]]\nname = \"orders\"\nmatch = \"orders/**\"\nkey = [\"id\"]\n\
                     on_key = \"update\"\nversion = \"v\"\ncolumns = [\n  \
                     {{ name = \"id\", type = \"int\" }},\n  \
                     {{ name = \"status\", type = \"string\" }},\n  \
                     {{ name = \"v\", type = \"{ty}\" }},\n]\n"
                ),
            )
            .unwrap();
            let body = |status: &str, vs: [&str; 3]| {
                let mut out = String::from("id,status,v\n");
                for (i, v) in vs.iter().enumerate() {
                    out.push_str(&format!("{},{status},{v}\n", i + 1));
                }
                out
            };
            s.drop_file("orders/a.csv", body("new", rows_a).as_bytes());
            s.ferry_ok(&["run"], 0);
            s.drop_file("orders/b.csv", body("paid", rows_b).as_bytes());
            s.ferry_ok(&["run"], 0);
            let status: Vec<String> = s
                .query("SELECT status FROM orders ORDER BY id")
                .into_iter()
                .map(|r| r[0].clone().unwrap())
                .collect();
            assert_eq!(status, ["paid", "new", "new"], "{ty}");
            let files = s.files();
            let b = files.iter().find(|f| f["path"].as_str().unwrap().ends_with("b.csv")).unwrap();
            assert_eq!(b["updated_records"].as_i64(), Some(1), "{ty}");
            assert_eq!(b["duplicate_records"].as_i64(), Some(2), "{ty}");
        }
    }
}

both_stores! {
    /// Every stored record of a keyed file keeps its own line, values and id order, with
    /// skipped duplicate keys among its rows, across chunks of 4,096 rows.
    fn every_keyed_record_keeps_its_line_values_and_id_order() {
        let s = Spool::new();
        orders(&s, "skip", false, "");
        // Every 7th row repeats an earlier key (a duplicate, skipped): the rows stored are not
        // the chunk's rows one for one.
        let rows: Vec<(i64, &str, i64)> = (0..10_000)
            .map(|i| if i % 7 == 6 { (i - 3, "dup", -1) } else { (i, "new", i * 3) })
            .collect();
        s.drop_file("orders/a.csv", csv(&rows).as_bytes());
        s.ferry_ok(&["run"], 0);
        let stored = s.query("SELECT id, v, _line FROM orders ORDER BY _id");
        let want: Vec<Vec<Option<String>>> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.1 != "dup")
            .map(|(i, r)| {
                vec![
                    Some(r.0.to_string()),
                    Some(r.2.to_string()),
                    Some((i + 2).to_string()),
                ]
            })
            .collect();
        assert_eq!(stored.len(), want.len());
        assert!(stored == want, "records out of line with their ids");
    }
}
