//! `ferry run`: the one-shot pipeline end to end.

use crate::harness::*;
use serde_json::Value;
use std::fs;
use std::time::Duration;

fn expected() -> serde_json::Map<String, Value> {
    expected_at(&fixtures().join("expected.json"))
}

/// A fixture drop's `expected.json`: path → what the ledger must say about it.
pub fn expected_at(path: &std::path::Path) -> serde_json::Map<String, Value> {
    let text = fs::read_to_string(path).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

/// Checks the ledger against `fixtures/expected.json`.
fn assert_matches_expectations(s: &Spool) {
    assert_ledger_matches(s, &expected());
    // What the ledger says was stored is what the tables hold.
    for (table, n) in [("customers", 8), ("orders", 15), ("default", 2)] {
        assert_eq!(
            s.count(&format!("SELECT count(*) FROM \"{table}\"")),
            n,
            "{table}"
        );
    }
}

/// Checks every ledger row against an `expected.json`: one row per file, its state, error kind
/// and line, and its record count.
pub fn assert_ledger_matches(s: &Spool, exp: &serde_json::Map<String, Value>) {
    let files = s.files_by_path();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        exp.keys()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
        "every fixture has exactly one ledger row"
    );
    for (path, e) in exp {
        let f = &files[path];
        if let Some(twin) = e.get("same_content_as") {
            // One of the pair is ingested, the other a duplicate pointing at it.
            let t = &files[twin.as_str().unwrap()];
            let states = [f["state"].as_str().unwrap(), t["state"].as_str().unwrap()];
            assert!(
                states.contains(&"ingested") && states.contains(&"duplicate"),
                "{path}: {states:?}"
            );
            let (orig, dup) = if f["state"] == "ingested" {
                (f, t)
            } else {
                (t, f)
            };
            assert_eq!(dup["duplicate_of"], orig["id"]);
            assert_eq!(dup["records"], 0);
            assert_eq!(orig["records"], e["records"]);
            continue;
        }
        assert_eq!(f["state"], e["state"], "{path}");
        if let Some(k) = e.get("error_kind") {
            assert_eq!(f["error_kind"], *k, "{path}");
            assert_eq!(f["records"], 0, "{path}: nothing of a bad file is stored");
        } else {
            assert_eq!(f["error_kind"], Value::Null, "{path}");
        }
        if let Some(n) = e.get("records") {
            assert_eq!(f["records"], *n, "{path}");
        }
        if let Some(l) = e.get("line") {
            assert_eq!(f["error_line"], *l, "{path}");
        }
        if let Some(d) = e.get("dataset") {
            assert_eq!(f["dataset"], *d, "{path}");
        }
    }
}

both_stores! {
    fn fixtures_load_as_documented_and_a_rerun_changes_nothing() {
        let s = Spool::new();
        let fixtures_before = tree(&fixtures().join("incoming"));
        let dir = fixtures().join("incoming");
        let dir = dir.to_str().unwrap();
        s.ferry_ok(&["run", "--keep", dir], 3);
        assert_matches_expectations(&s);

        // Every bad file has a byte-identical copy and a reason in quarantine/.
        let exp = expected();
        let files = s.files_by_path();
        for (path, e) in &exp {
            let Some(kind) = e.get("error_kind") else {
                continue;
            };
            let stored = files[path]["stored_at"].as_str().unwrap();
            let copy = s.root.join(stored);
            let original = fixtures().join("incoming").join(path);
            if fs::symlink_metadata(&original)
                .unwrap()
                .file_type()
                .is_symlink()
            {
                assert_eq!(
                    fs::read_link(&copy).unwrap(),
                    fs::read_link(&original).unwrap()
                );
            } else {
                assert_eq!(
                    fs::read(&copy).unwrap(),
                    fs::read(&original).unwrap(),
                    "{path}"
                );
            }
            let mut reason_name = copy.file_name().unwrap().to_os_string();
            reason_name.push(".reason.json");
            let reason: Value =
                serde_json::from_slice(&fs::read(copy.with_file_name(reason_name)).unwrap()).unwrap();
            assert_eq!(reason["error_kind"], *kind);
            assert_eq!(reason["path"], path.as_str());
            assert_eq!(reason["sha256"], files[path]["sha256"]);
            assert_eq!(reason["size"], files[path]["size"]);
            assert_eq!(reason["attempt"], 1);
            assert!(reason["message"].as_str().unwrap().len() > 10);
            assert!(reason["stage"].is_string());
        }

        let ledger_before = s.files();
        let quarantine_before = tree(&s.root.join("quarantine"));
        let report: Value =
            serde_json::from_slice(&s.ferry_ok(&["run", "--keep", dir, "--json"], 0).stdout).unwrap();
        assert_eq!(report["unchanged"], 20);
        assert_eq!(report["ingested"], 0);
        assert_eq!(s.files(), ledger_before, "a rerun adds no ledger row");
        assert_eq!(tree(&s.root.join("quarantine")), quarantine_before);
        assert_eq!(
            tree(&fixtures().join("incoming")),
            fixtures_before,
            "the checkout is untouched"
        );
        assert!(!s.root.join("archive").exists() || tree(&s.root.join("archive")).is_empty());
    }
}

both_stores! {
    fn every_input_ends_byte_identical_in_archive_or_quarantine() {
        let s = Spool::new();
        copy_tree(&fixtures().join("incoming"), &s.incoming());
        let inputs = tree(&s.incoming());
        s.ferry_ok(&["run"], 3);
        assert_matches_expectations(&s);
        assert!(s.leftover_inputs().is_empty(), "{:?}", s.leftover_inputs());
        let files = s.files_by_path();
        for (path, hash) in &inputs {
            let stored = s.root.join(files[path]["stored_at"].as_str().unwrap());
            if hash.starts_with("link:") {
                assert!(fs::symlink_metadata(&stored)
                    .unwrap()
                    .file_type()
                    .is_symlink());
                continue;
            }
            assert_eq!(&sha256_hex(&fs::read(&stored).unwrap()), hash, "{path}");
            assert_eq!(files[path]["sha256"].as_str().unwrap(), hash);
            let state = files[path]["state"].as_str().unwrap();
            let place = if state == "quarantined" {
                "quarantine/"
            } else {
                "archive/"
            };
            assert!(
                files[path]["stored_at"]
                    .as_str()
                    .unwrap()
                    .starts_with(place),
                "{path}"
            );
        }
        // Running again with nothing new: exit 0, nothing changes.
        let before = s.files();
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.files(), before);
    }
}

both_stores! {
    fn same_content_under_a_new_name_is_a_duplicate_and_new_content_is_new() {
        let s = Spool::new();
        let body = b"id,v\n1,a\n2,b\n";
        s.drop_file("t/a.csv", body);
        s.ferry_ok(&["run"], 0);
        s.drop_file("t/b.csv", body);
        s.ferry_ok(&["run"], 0);
        let files = s.files_by_path();
        assert_eq!(files["t/a.csv"]["state"], "ingested");
        assert_eq!(files["t/b.csv"]["state"], "duplicate");
        assert_eq!(files["t/b.csv"]["duplicate_of"], files["t/a.csv"]["id"]);
        assert_eq!(s.count("SELECT count(*) FROM t"), 2);
        // The duplicate is archived too, byte-identical.
        let dup = s.root.join(files["t/b.csv"]["stored_at"].as_str().unwrap());
        assert_eq!(fs::read(dup).unwrap(), body);

        // Same name, new content: a new file.
        s.drop_file("t/a.csv", b"id,v\n3,c\n");
        s.ferry_ok(&["run"], 0);
        let rows = s.files();
        let a: Vec<&Value> = rows.iter().filter(|f| f["path"] == "t/a.csv").collect();
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|f| f["state"] == "ingested"));
        assert_eq!(s.count("SELECT count(*) FROM t"), 3);
        // Both versions are archived under distinct names.
        let stored: std::collections::BTreeSet<&str> =
            a.iter().map(|f| f["stored_at"].as_str().unwrap()).collect();
        assert_eq!(stored.len(), 2);
    }
}

both_stores! {
    fn a_new_column_in_a_later_file_is_added() {
        let s = Spool::new();
        s.drop_file("people/1.csv", b"id,name\n1,Ann\n");
        s.ferry_ok(&["run"], 0);
        s.drop_file("people/2.csv", b"name,id,city\nBob,2,Oslo\n");
        s.drop_file("people/3.ndjson", b"{\"id\":3,\"zip\":\"0150\"}\n");
        s.ferry_ok(&["run"], 0);
        // The two later files are stored in either order: so are their new columns.
        let cols = s.columns("people");
        assert_eq!(cols[..5], ["_id", "_file_id", "_line", "id", "name"]);
        let mut added = cols[5..].to_vec();
        added.sort();
        assert_eq!(added, ["city", "zip"]);
        let get = |id: &str| -> (Option<String>, Option<String>, Option<String>) {
            let r = s.query(&format!(
                "SELECT name, city, zip FROM people WHERE id = '{id}'"
            ));
            (r[0][0].clone(), r[0][1].clone(), r[0][2].clone())
        };
        assert_eq!(get("1"), (Some("Ann".into()), None, None));
        assert_eq!(get("2"), (Some("Bob".into()), Some("Oslo".into()), None));
        assert_eq!(get("3"), (None, None, Some("0150".into())));
    }
}

both_stores! {
    fn exit_codes_say_how_it_went() {
        let s = Spool::new();
        s.drop_file("a/ok.csv", b"x\n1\n");
        s.ferry_ok(&["run"], 0);
        s.drop_file("a/bad.csv", b"x,y\n1\n");
        s.ferry_ok(&["run"], 3);
        // Bad usage.
        s.ferry_ok(&["run", "--no-such-flag"], 2);
        s.ferry_ok(&["frobnicate"], 2);
        // A config that cannot be used: file, line and key named.
        let cfg = s.scratch("cfg").join("ferry.toml");
        fs::write(&cfg, "[ready]\nsettle = \"1s\"\nignor = [\"*.x\"]\n").unwrap();
        let out = s.ferry_ok(&["--config", cfg.to_str().unwrap(), "run"], 2);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("ferry.toml") && err.contains("line 3") && err.contains("ignor"),
            "{err}"
        );
        // The root is a file: not a spool (bad usage), and with --init a fatal error.
        let not_dir = s.scratch("x").join("file");
        fs::write(&not_dir, "").unwrap();
        for (init, code) in [(false, 2), (true, 1)] {
            let mut cmd = std::process::Command::new(FERRY);
            cmd.args(["--root", not_dir.to_str().unwrap(), "run"]);
            if init {
                cmd.arg("--init");
            }
            assert_eq!(
                cmd.output().unwrap().status.code(),
                Some(code),
                "--init {init}"
            );
        }
    }
}

fn is_rfc3339_millis_utc(s: &str) -> bool {
    // 2026-11-22T15:32:43.539Z
    let b = s.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

both_stores! {
    fn files_and_status_report_the_ledger_as_json() {
        let s = Spool::new();
        s.drop_file("sales/q1.csv", b"id,amount\n1,10\n2,20\n");
        s.drop_file("sales/broken.json", b"[{\"id\":1},");
        s.ferry_ok(&["run"], 3);
        let files = s.files_by_path();
        let ok = &files["sales/q1.csv"];
        for key in [
            "id",
            "path",
            "sha256",
            "size",
            "state",
            "dataset",
            "records",
            "error_kind",
            "received_at",
            "finished_at",
        ] {
            assert!(ok.get(key).is_some(), "missing {key}");
        }
        assert_eq!(ok["sha256"], sha256_hex(b"id,amount\n1,10\n2,20\n"));
        assert_eq!(ok["size"], 20);
        assert_eq!(ok["dataset"], "sales");
        assert_eq!(ok["records"], 2);
        assert_eq!(ok["error_kind"], Value::Null);
        assert!(
            is_rfc3339_millis_utc(ok["received_at"].as_str().unwrap()),
            "{}",
            ok["received_at"]
        );
        assert!(is_rfc3339_millis_utc(ok["finished_at"].as_str().unwrap()));
        assert_eq!(files["sales/broken.json"]["error_kind"], "json.syntax");

        let q = s.json(&["files", "--state", "quarantined", "--json"]);
        assert_eq!(q.as_array().unwrap().len(), 1);

        let st = s.json(&["status", "--json"]);
        assert_eq!(st["files"]["ingested"], 1);
        assert_eq!(st["files"]["quarantined"], 1);
        assert_eq!(st["quarantined"], 1);
        assert_eq!(st["records"], 2);
        let sales = st["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "sales")
            .unwrap();
        assert_eq!(sales["records"], 2);
        assert_eq!(sales["files"], 1);
    }
}

both_stores! {
    fn temp_names_hidden_files_and_unsettled_files_wait() {
        let s = Spool::new();
        s.drop_file("d/upload.csv.part", b"a\n1\n");
        s.drop_file("d/.partial.csv", b"a\n1\n");
        s.drop_file("d/x.csv~", b"a\n1\n");
        // Written just now: the run waits for the quiet period, then takes it.
        s.drop_fresh("d/fresh.csv", b"a\n1\n");
        // Still being written during the whole run: never taken.
        let growing = s.incoming().join("d/growing.csv");
        fs::write(&growing, b"a\n").unwrap();
        let writer = {
            let growing = growing.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                for i in 0..60 {
                    let mut f = fs::OpenOptions::new().append(true).open(&growing).unwrap();
                    writeln!(f, "{i}").unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let out = s.ferry_ok(&["run", "--json"], 0);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let files = s.files_by_path();
        assert_eq!(files.keys().collect::<Vec<_>>(), ["d/fresh.csv"]);
        let waiting = waiting_rules(&report);
        for (p, rule) in [
            ("d/upload.csv.part", "temp_name"),
            ("d/.partial.csv", "hidden"),
            ("d/x.csv~", "temp_name"),
            ("d/growing.csv", "settling"),
        ] {
            assert!(
                waiting.contains(&(p.to_string(), rule.to_string())),
                "{p}: {waiting:?}"
            );
        }
        assert!(growing.exists());
        writer.join().unwrap();
        assert!(s.incoming().join("d/upload.csv.part").exists());
    }
}

both_stores! {
    fn symlinks_are_quarantined_without_reading_the_target() {
        let s = Spool::new();
        let secret = s.scratch("outside").join("secret.csv");
        fs::write(&secret, b"password\nhunter2\n").unwrap();
        fs::create_dir_all(s.incoming().join("d")).unwrap();
        std::os::unix::fs::symlink(&secret, s.incoming().join("d/link.csv")).unwrap();
        s.ferry_ok(&["run"], 3);
        let f = &s.files_by_path()["d/link.csv"];
        assert_eq!(f["error_kind"], "symlink");
        assert_eq!(f["sha256"], Value::Null);
        assert_eq!(fs::read(&secret).unwrap(), b"password\nhunter2\n");
        let q = s.root.join(f["stored_at"].as_str().unwrap());
        assert_eq!(fs::read_link(q).unwrap(), secret);
        // Nothing of the target was stored anywhere.
        assert!(!s.table_exists("d"));
    }
}

both_stores! {
    fn two_runs_at_once_take_each_file_once() {
        let s = Spool::new();
        let n = 300;
        for i in 0..n {
            s.drop_file(
                &format!("m/f{i:04}.csv"),
                format!("k,v\n{i},a\n{i},b\n").as_bytes(),
            );
        }
        let a = s.cmd().arg("run").output();
        let handle = {
            let mut c = s.cmd();
            std::thread::spawn(move || c.arg("run").output().unwrap())
        };
        let a = a.unwrap();
        let b = handle.join().unwrap();
        assert_eq!(
            a.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&a.stderr)
        );
        assert_eq!(
            b.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&b.stderr)
        );
        assert_eq!(
            s.count("SELECT count(*) FROM files WHERE state = 'ingested'"),
            n
        );
        assert_eq!(s.count("SELECT count(*) FROM files"), n);
        assert_eq!(s.count("SELECT count(DISTINCT path) FROM files"), n);
        assert_eq!(s.count("SELECT count(*) FROM m"), 2 * n);
        assert!(s.leftover_inputs().is_empty());
    }
}

both_stores! {
    fn a_folder_elsewhere_is_read_in_place_with_keep() {
        let s = Spool::new();
        let ext = s.scratch("export");
        fs::create_dir_all(ext.join("a")).unwrap();
        fs::write(ext.join("a/x.csv"), b"k\n1\n").unwrap();
        backdate(&ext.join("a/x.csv"));
        let before = tree(&ext);
        s.ferry_ok(&["run", "--keep", ext.to_str().unwrap()], 0);
        assert_eq!(tree(&ext), before);
        assert_eq!(s.count("SELECT count(*) FROM a"), 1);
        // A folder that does not exist is bad usage.
        s.ferry_ok(&["run", "--keep", "/no/such/folder"], 2);
    }
}

#[test]
fn run_dir_judges_a_folder_in_incoming_by_its_path_under_incoming() {
    let s = Spool::new();
    s.drop_file("acme/eu/2026/a.csv", b"id\n1\n");
    s.drop_file("acme/us/b.csv", b"id\n2\n");
    let dir = s.incoming().join("acme/eu");
    s.ferry_ok(&["run", dir.to_str().unwrap()], 0);
    let files = s.files_by_path();
    assert_eq!(files.len(), 1, "only the folder named is taken");
    assert_eq!(
        files["acme/eu/2026/a.csv"]["dataset"], "acme",
        "named as a scan would"
    );
    assert!(s.incoming().join("acme/us/b.csv").exists());
}

#[test]
fn run_refuses_the_spool_root_folders_above_incoming_and_moving_from_outside_unasked() {
    let s = Spool::new();
    s.drop_file("acme/a.csv", b"id\n1\n");
    fs::create_dir_all(s.root.join("archive/x")).unwrap();
    for dir in [
        s.root.clone(),
        s.root.parent().unwrap().to_path_buf(),
        s.root.join("archive/x"),
    ] {
        s.ferry_ok(&["run", dir.to_str().unwrap()], 2);
    }
    assert!(s.files().is_empty());
    let outside = s.scratch("exports");
    fs::create_dir_all(outside.join("orders")).unwrap();
    let file = outside.join("orders/o.csv");
    fs::write(&file, b"id\n7\n").unwrap();
    backdate(&file);
    // Without --keep or --move nothing outside the spool is moved.
    let out = s.ferry_ok(&["run", outside.to_str().unwrap()], 2);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("--keep") && msg.contains("--move"), "{msg}");
    s.ferry_ok(&["run", file.to_str().unwrap()], 2);
    assert!(file.exists() && s.files().is_empty());
    s.ferry_ok(&["run", "--keep", outside.to_str().unwrap()], 0);
    assert!(file.exists());
    assert_eq!(s.files().len(), 1);
    fs::write(&file, b"id\n8\n").unwrap();
    backdate(&file);
    s.ferry_ok(&["run", "--move", outside.to_str().unwrap()], 0);
    assert!(!file.exists(), "--move takes it");
    assert_eq!(s.files().len(), 2);
}

both_stores! {
    fn of_identical_files_the_first_in_discovery_order_is_stored_in_a_dry_run_and_a_run() {
        for round in 0..3 {
            let s = Spool::new();
            let same = format!("id,v\n{round},same\n").into_bytes();
            // Copies of one content under names that sort before and after other files; small
            // and big files between them keep the workers busy in different orders.
            for (i, name) in ["m", "c", "x", "a", "q"].iter().enumerate() {
                s.drop_file(&format!("feed/{name}/copy.csv"), &same);
                let filler = format!("id,v\n{}\n", "9,filler\n".repeat(i * 20_000));
                s.drop_file(&format!("feed/{name}/filler-{i}.csv"), filler.as_bytes());
            }
            let dry = s.json(&["run", "--dry-run", "--json"]);
            let dry: Vec<(String, String)> = dry["verdicts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["path"].as_str().unwrap().ends_with("copy.csv"))
                .map(|v| (v["path"].as_str().unwrap().into(), v["outcome"].as_str().unwrap().into()))
                .collect();
            s.ferry_ok(&["run"], 0);
            let files = s.files_by_path();
            for (path, outcome) in &dry {
                let want = if path == "feed/a/copy.csv" { "ingest" } else { "duplicate" };
                assert_eq!(outcome, want, "dry run, {path}");
                let state = files[path]["state"].as_str().unwrap();
                assert_eq!(&state[..3], &want[..3], "run, {path}");
            }
            assert_eq!(dry.len(), 5);
        }
    }
}

both_stores! {
    fn explain_dry_run_and_run_give_one_verdict() {
        let s = Spool::new();
        fs::write(
            s.root.join("ferry.toml"),
            "[[dataset]]\nname = \"keyed\"\nkey = [\"id\"]\ncolumns = [{ name = \"id\", type = \"int\" }, { name = \"v\" }]\n",
        )
        .unwrap();
        s.drop_file("keyed/first.csv", b"id,v\n1,a\n2,b\n3,c\n");
        s.ferry_ok(&["run"], 0);
        // Header only (with and without blank lines), an empty JSON array, XML with no records,
        // keys already stored, keys repeated in the file, keys shared by two files of the run.
        s.drop_file("h/header.csv", b"id,name\n");
        s.drop_file("h/header-blank.csv", b"id,name\n\n\n");
        s.drop_file("h/empty.json", b"[]");
        s.drop_file("h/none.xml", b"<r></r>");
        s.drop_file("keyed/again.csv", b"id,v\n2,b\n3,c\n4,d\n4,d\n");
        s.drop_file("keyed/more.csv", b"id,v\n5,e\n6,f\n5,e\n");
        let (code, dry) = json_any(&s, &["run", "--dry-run", "--json"]);
        assert_eq!(code, Some(3), "the run's exit code: a file would be quarantined");
        let mut explained = std::collections::BTreeMap::new();
        for v in dry["verdicts"].as_array().unwrap() {
            let path = v["path"].as_str().unwrap().to_string();
            let e = s.json(&["explain", s.incoming().join(&path).to_str().unwrap(), "--json"]);
            explained.insert(path, e["verdict"].clone());
        }
        let (code, summary) = json_any(&s, &["run", "--json"]);
        assert_eq!(code, Some(3));
        let files = s.files_by_path();
        for v in dry["verdicts"].as_array().unwrap() {
            let path = v["path"].as_str().unwrap();
            let row = &files[path];
            let state = row["state"].as_str().unwrap();
            let outcome = v["outcome"].as_str().unwrap();
            assert_eq!(&state[..3], &outcome[..3], "{path}: dry run {v}, run {row}");
            let e = &explained[path];
            assert_eq!(e["outcome"], v["outcome"], "{path}: explain {e}");
            if outcome == "ingest" {
                assert_eq!(row["records"], v["records"], "{path}");
                // A file alone in its run: its keys against the store only.
                if path != "keyed/more.csv" && path != "keyed/again.csv" {
                    assert_eq!(e["records"], v["records"], "{path}");
                }
            }
        }
        assert_eq!(files["keyed/again.csv"]["duplicate_records"], 3);
        assert_eq!(files["keyed/more.csv"]["duplicate_records"], 1);
        assert_eq!(dry["duplicate_records"], summary["duplicate_records"]);
        assert_eq!(dry["duplicate_records"], 4);
        assert_eq!(dry["records"], summary["records"]);
    }
}
