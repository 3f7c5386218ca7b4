//! Retention (`[retention]`, `ferry prune`) and giving up on quarantined files
//! (`quarantine discard`), on both stores.

use crate::harness::*;
use std::fs;

/// Makes every ledger row of these paths look finished long ago (the same SQL on both stores).
fn finished_long_ago(s: &Spool, paths: &[&str]) {
    for p in paths {
        s.query(&format!(
            "UPDATE files SET finished_at = '2020-01-01T00:00:00Z' WHERE path = '{p}'"
        ));
    }
}

fn stored_at(s: &Spool, path: &str) -> std::path::PathBuf {
    s.root
        .join(s.files_by_path()[path]["stored_at"].as_str().unwrap())
}

both_stores! {
    fn prune_removes_only_old_placed_files_that_still_have_their_recorded_hash() {
        let s = Spool::new();
        fs::write(
            s.root.join("ferry.toml"),
            "[retention]\narchive_days = 30\nquarantine_days = 10\nledger_days = 60\n",
        )
        .unwrap();
        s.drop_file("orders/a.csv", b"id,v\n1,a\n2,b\n");
        s.drop_file("orders/bad.csv", b"id,v\n3,\"open\n");
        s.drop_file("orders/young.csv", b"id,v\n4,d\n");
        s.drop_file("orders/changed.csv", b"id,v\n5,e\n");
        s.ferry_ok(&["run"], 3);
        // Sent again under another name, after a.csv was loaded: a duplicate of it.
        s.drop_file("orders/b.csv", b"id,v\n1,a\n2,b\n");
        s.ferry_ok(&["run"], 0);
        let place: Vec<_> = ["orders/a.csv", "orders/b.csv", "orders/bad.csv", "orders/young.csv", "orders/changed.csv"]
            .iter()
            .map(|p| stored_at(&s, p))
            .collect();
        let bad_reason = place[2].with_file_name("bad.csv.reason.json");
        assert!(place.iter().all(|p| p.exists()) && bad_reason.exists());
        finished_long_ago(&s, &["orders/a.csv", "orders/b.csv", "orders/bad.csv", "orders/changed.csv"]);
        // Someone edited an archived file: it no longer is what was loaded.
        fs::write(&place[4], b"id,v\n5,EDITED\n").unwrap();
        let before = tree(&s.root.join("archive"));

        let dry = s.ferry_ok(&["prune", "--dry-run", "--json"], 5);
        let dry: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
        assert_eq!(tree(&s.root.join("archive")), before, "a dry run removes nothing");
        assert!(place[2].exists());
        assert_eq!(dry["areas"][0]["files"], 2, "{dry}");
        assert_eq!(dry["areas"][1]["files"], 1, "{dry}");
        assert_eq!(s.count("SELECT count(*) FROM files WHERE pruned_at IS NOT NULL"), 0);

        let out = s.ferry_ok(&["prune", "--json"], 5);
        let pruned: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(!place[0].exists() && !place[1].exists(), "old archived files removed");
        assert!(!place[2].exists() && !bad_reason.exists(), "old quarantined file and its reason removed");
        assert!(place[3].exists(), "a file younger than archive_days stays");
        assert_eq!(
            sha256_hex(&fs::read(&place[4]).unwrap()),
            sha256_hex(b"id,v\n5,EDITED\n"),
            "a file whose content changed is left as it is"
        );
        let left = pruned["left"].as_array().unwrap();
        assert_eq!(left.len(), 1, "{pruned}");
        assert!(left[0]["path"].as_str().unwrap().ends_with("changed.csv"));

        // The ingested file's row stays, marked; the duplicate's and the quarantined file's rows
        // were past ledger_days with nothing left on disk, so they are forgotten.
        let rows = s.files_by_path();
        assert!(rows["orders/a.csv"]["pruned_at"].is_string());
        assert!(rows["orders/changed.csv"]["pruned_at"].is_null());
        assert!(!rows.contains_key("orders/b.csv") && !rows.contains_key("orders/bad.csv"));
        assert_eq!(pruned["ledger_rows"], 2, "{pruned}");
        assert_eq!(s.count("SELECT count(*) FROM orders"), 4, "records are never pruned");

        // The content is still known: sent again, it is a duplicate, not loaded twice.
        s.drop_file("orders/again.csv", b"id,v\n1,a\n2,b\n");
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.files_by_path()["orders/again.csv"]["state"], "duplicate");
        assert_eq!(s.count("SELECT count(*) FROM orders"), 4);

        // Nothing more is due: a second prune removes nothing and still reports the edited file.
        let again: serde_json::Value =
            serde_json::from_slice(&s.ferry_ok(&["prune", "--json"], 5).stdout).unwrap();
        assert_eq!(again["areas"][0]["files"], 0);
        assert!(place[3].exists());
    }
}

#[test]
fn prune_without_retention_removes_nothing() {
    let s = Spool::new();
    s.drop_file("orders/a.csv", b"id\n1\n");
    s.ferry_ok(&["run"], 0);
    s.query("UPDATE files SET finished_at = '2000-01-01T00:00:00Z'");
    let before = tree(&s.root);
    s.ferry_ok(&["prune"], 0);
    assert_eq!(tree(&s.root), before);
    // And a retention setting that is not a number of days is refused.
    fs::write(
        s.root.join("ferry.toml"),
        "[retention]\narchive_days = -1\n",
    )
    .unwrap();
    s.ferry_ok(&["prune"], 2);
    fs::write(s.root.join("ferry.toml"), "[retention]\narchive_day = 3\n").unwrap();
    s.ferry_ok(&["prune"], 2);
}

#[test]
fn prune_refuses_a_recorded_place_outside_its_area() {
    let s = Spool::new();
    fs::write(s.root.join("ferry.toml"), "[retention]\narchive_days = 1\n").unwrap();
    s.drop_file("orders/a.csv", b"id\n1\n");
    s.ferry_ok(&["run"], 0);
    // A ledger edited by hand (or a bug) must not make prune delete anything outside the
    // archive, even a file with exactly the recorded bytes.
    let victim = s.root.join("kept.csv");
    fs::write(&victim, b"id\n1\n").unwrap();
    s.query(
        "UPDATE files SET finished_at = '2000-01-01T00:00:00Z', stored_at = 'archive/../kept.csv'",
    );
    s.ferry_ok(&["prune"], 5);
    assert!(victim.exists());
}

both_stores! {
    fn a_discarded_file_leaves_the_quarantine_list_with_its_reason_recorded() {
        let s = Spool::new();
        s.drop_file("orders/bad1.csv", b"id,v\n1,\"open\n");
        s.drop_file("orders/bad2.csv", b"id,v\n2,\"open\n");
        s.drop_file("orders/good.csv", b"id,v\n3,c\n");
        s.ferry_ok(&["run"], 3);
        let rows = s.files_by_path();
        let (bad1, bad2) = (rows["orders/bad1.csv"]["id"].as_i64().unwrap(), rows["orders/bad2.csv"]["id"].as_i64().unwrap());
        let good = rows["orders/good.csv"]["id"].as_i64().unwrap();
        let place = stored_at(&s, "orders/bad1.csv");

        // A reason is required; only an open quarantined file can be discarded.
        s.ferry_ok(&["quarantine", "discard", &bad1.to_string()], 2);
        s.ferry_ok(&["quarantine", "discard", &bad1.to_string(), "--reason", "  "], 2);
        s.ferry_ok(&["quarantine", "discard", &good.to_string(), "--reason", "x"], 2);
        s.ferry_ok(&["quarantine", "discard", "99999", "--reason", "x"], 2);

        s.ferry_ok(&["quarantine", "discard", &bad1.to_string(), "--reason", "partner resent it fixed"], 0);
        let row = &s.files_by_path()["orders/bad1.csv"];
        assert_eq!(row["discard_reason"], "partner resent it fixed");
        assert!(row["discarded_at"].is_string());
        assert!(place.exists(), "discarding deletes nothing; retention does, later");
        let listed: Vec<i64> = s.json(&["quarantine", "list", "--json"]).as_array().unwrap()
            .iter().map(|r| r["id"].as_i64().unwrap()).collect();
        assert_eq!(listed, vec![bad2]);
        let status = s.json(&["status", "--json"]);
        assert_eq!(status["quarantined"], 1);
        assert_eq!(status["quarantine"]["discarded"], 1);
        s.ferry_ok(&["quarantine", "discard", &bad1.to_string(), "--reason", "again"], 2);

        // `retry --all` leaves a discarded file alone; naming it still sends it through.
        s.ferry_ok(&["quarantine", "retry", "--all"], 3);
        assert!(place.exists());
        s.ferry_ok(&["quarantine", "retry", &bad1.to_string()], 3);
        assert_eq!(s.json(&["status", "--json"])["quarantined"], 2);
    }
}

#[test]
fn pruning_an_archived_file_leaves_a_partner_file_named_like_its_reason_file() {
    let s = Spool::new();
    fs::write(s.root.join("ferry.toml"), "[retention]\narchive_days = 1\n").unwrap();
    s.drop_file("orders/a.csv", b"id\n1\n");
    s.ferry_ok(&["run"], 0);
    s.drop_file("orders/a.csv.reason.json", b"[{\"id\":2}]");
    s.ferry_ok(&["run"], 0);
    let partner = stored_at(&s, "orders/a.csv.reason.json");
    s.query("UPDATE files SET finished_at = '2020-01-01T00:00:00Z' WHERE path = 'orders/a.csv'");
    s.ferry_ok(&["prune"], 0);
    assert!(!stored_at(&s, "orders/a.csv").exists());
    assert!(
        partner.exists(),
        "a partner's archived file is never taken for a sidecar"
    );
}
