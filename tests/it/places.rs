//! Where files end up: one name per file in `archive/` and `quarantine/` (partners' names never
//! meet ferry's sidecars, folders kept as `incoming/` had them), replays that check what they
//! replay, and removals and writes that never leave the spool through a symlinked folder.

use crate::harness::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

/// Every ledger row that names a place has its own bytes there (the recorded SHA-256), every
/// rejects report it names exists, and each quarantined file's reason file names its row.
fn assert_every_place_holds_its_file(s: &Spool) {
    let rows = s.files();
    let retried: Vec<&Value> = rows
        .iter()
        .map(|r| &r["retry_of"])
        .filter(|v| v.is_i64())
        .collect();
    let mut places = std::collections::BTreeSet::new();
    for r in &rows {
        let Some(at) = r["stored_at"].as_str() else {
            continue;
        };
        if r["pruned_at"].is_string() || retried.contains(&&r["id"]) {
            continue;
        }
        assert!(places.insert(at.to_string()), "{at} is two files' place");
        let bytes = fs::read(s.root.join(at)).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(
            Some(sha256_hex(&bytes).as_str()),
            r["sha256"].as_str(),
            "{at}"
        );
        if r["state"] == "quarantined" {
            let reason: Value = serde_json::from_slice(
                &fs::read(s.root.join(format!("{at}.reason.json"))).unwrap(),
            )
            .unwrap();
            assert_eq!(reason["ledger_id"], r["id"], "{at}.reason.json");
        }
        if let Some(rep) = r["rejects_at"].as_str() {
            assert!(places.insert(rep.to_string()), "{rep} is two files' place");
            let text = fs::read_to_string(s.root.join(rep)).unwrap();
            let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
            assert_eq!(first["ledger_id"], r["id"], "{rep}");
        }
    }
}

both_stores! {
    fn partner_files_named_like_sidecars_never_replace_one_and_folders_are_kept() {
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"), "[[dataset]]\nname = \"acme\"\nmax_bad_records = 5\n\
            columns = [{ name = \"id\", type = \"int\" }]\n").unwrap();
        // A partner's files named like the sidecars of its other files, in every case and
        // order: some quarantined (bad JSON), some loaded.
        s.drop_file("acme/x.csv.reason.json", b"{not json");
        s.drop_file("acme/X.CSV.REASON.JSON", b"{also not json");
        s.drop_file("acme/y.csv.rejects.ndjson", b"{broken");
        s.ferry_ok(&["run"], 3);
        s.drop_file("acme/x.csv", b"id\n\"open\n");
        s.drop_file("acme/y.csv", b"id\n1\nnot-a-number\n");
        // The same name in two folders, and a folder named like a sidecar.
        s.drop_file("acme/eu/report.csv", b"id\n\"eu\n");
        s.drop_file("acme/us/report.csv", b"id\n\"us\n");
        s.drop_file("acme/z.csv.reason.json/z.csv", b"id\n\"deep\n");
        s.drop_file("acme/z.csv", b"id\n\"top\n");
        s.ferry_ok(&["run"], 3);
        s.drop_file("acme/x.csv.reason.json", b"{not json, sent again with new bytes");
        s.ferry_ok(&["run"], 3);

        assert_every_place_holds_its_file(&s);
        let rows = s.files_by_path();
        let at = |p: &str| rows[p]["stored_at"].as_str().unwrap().to_string();
        assert_eq!(at("acme/eu/report.csv"), "quarantine/acme/eu/report.csv");
        assert_eq!(at("acme/us/report.csv"), "quarantine/acme/us/report.csv");
        assert_eq!(at("acme/x.csv"), "quarantine/acme/x.csv");
        assert_eq!(at("acme/z.csv.reason.json/z.csv"), "quarantine/acme/z.csv.reason~.json/z.csv");
        for p in ["acme/x.csv.reason.json", "acme/X.CSV.REASON.JSON", "acme/y.csv.rejects.ndjson"] {
            let placed = at(p);
            assert!(placed.starts_with("quarantine/acme/"), "{placed}");
            assert!(!placed.to_lowercase().ends_with(".reason.json"), "{placed}");
            assert!(!placed.ends_with(".rejects.ndjson"), "{placed}");
        }
        assert_eq!(
            rows["acme/y.csv"]["rejects_at"].as_str(),
            Some("quarantine/acme/y.csv.rejects.ndjson")
        );
        // Nothing in quarantine/ that the ledger did not put there.
        let on_disk = tree(&s.root.join("quarantine"));
        let expected: usize = s.files().iter().filter(|r| r["state"] == "quarantined").count() * 2 + 1;
        assert_eq!(on_disk.len(), expected, "{on_disk:#?}");
    }
}

both_stores! {
    fn retry_refuses_a_quarantined_copy_that_changed_and_loads_nothing() {
        let s = Spool::new();
        s.drop_file("orders/a.csv", b"id,v\n1,\"open\n");
        s.drop_file("orders/b.csv", b"id,v\n2,\"open\n");
        s.ferry_ok(&["run"], 3);
        let rows = s.files_by_path();
        let (a, b) = (&rows["orders/a.csv"], &rows["orders/b.csv"]);
        let a_at = s.root.join(a["stored_at"].as_str().unwrap());
        let b_at = s.root.join(b["stored_at"].as_str().unwrap());
        // Someone "fixed" the quarantined copy by hand, and replaced the other with a link.
        fs::write(&a_at, b"id,v\n1,fixed\n").unwrap();
        let elsewhere = s.scratch("elsewhere").join("b.csv");
        fs::write(&elsewhere, b"id,v\n2,\"open\n").unwrap();
        fs::remove_file(&b_at).unwrap();
        symlink(&elsewhere, &b_at).unwrap();

        let a_id = a["id"].as_i64().unwrap().to_string();
        let b_id = b["id"].as_i64().unwrap().to_string();
        let out = s.ferry_ok(&["quarantine", "retry", &a_id, &b_id, "--json"], 5);
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["left"], 2, "{summary}");
        let named: Vec<&str> = summary["problems"].as_array().unwrap().iter()
            .map(|p| p["path"].as_str().unwrap()).collect();
        assert_eq!(named, ["orders/a.csv", "orders/b.csv"]);
        assert!(!s.table_exists("orders"), "nothing was loaded");
        assert_eq!(fs::read(&a_at).unwrap(), b"id,v\n1,fixed\n", "left as it was");
        assert!(fs::symlink_metadata(&b_at).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&elsewhere).unwrap(), b"id,v\n2,\"open\n");
        assert_eq!(s.files().len(), 2, "no new attempt recorded");
        assert_eq!(fs::read_dir(s.root.join("processing")).unwrap().flatten()
            .filter(|e| e.file_name() != ".owners").count(), 0);
        // The unchanged copy of a file still retries.
        fs::write(&a_at, b"id,v\n1,\"open\n").unwrap();
        s.ferry_ok(&["quarantine", "retry", &a_id], 3);
        assert_eq!(s.files().len(), 3);
    }
}

both_stores! {
    /// An archived file whose folder is swapped for a link to a folder outside the spool
    /// holding a file with the very same bytes: the hash check alone would pass.
    fn prune_never_follows_a_folder_replaced_by_a_symlink() {
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"),
            "[retention]\narchive_days = 1\nquarantine_days = 1\n").unwrap();
        let body = b"id\n1\n";
        s.drop_file("acme/eu/a.csv", body);
        s.drop_file("acme/eu/bad.csv", b"id\n\"x\n");
        s.ferry_ok(&["run"], 3);
        s.query("UPDATE files SET finished_at = '2020-01-01T00:00:00Z'");
        let rows = s.files_by_path();
        let archived = s.root.join(rows["acme/eu/a.csv"]["stored_at"].as_str().unwrap());
        let quarantined = s.root.join(rows["acme/eu/bad.csv"]["stored_at"].as_str().unwrap());
        let outside = s.scratch("outside");
        for placed in [&archived, &quarantined] {
            let folder = placed.parent().unwrap();
            let name = placed.file_name().unwrap();
            fs::write(outside.join(name), fs::read(placed).unwrap()).unwrap();
            fs::write(outside.join(format!("{}.reason.json", name.to_str().unwrap())),
                fs::read(s.root.join(format!("{}.reason.json", placed.display()))).unwrap_or_default()).unwrap();
            fs::rename(folder, folder.with_file_name("moved-away")).unwrap();
            symlink(&outside, folder).unwrap();
        }
        let before = tree(&outside);

        let dry: Value = serde_json::from_slice(&s.ferry_ok(&["prune", "--dry-run", "--json"], 5).stdout).unwrap();
        let real: Value = serde_json::from_slice(&s.ferry_ok(&["prune", "--json"], 5).stdout).unwrap();
        assert_eq!(tree(&outside), before, "nothing outside the spool is removed");
        assert_eq!(real["left"].as_array().unwrap().len(), 2, "{real}");
        assert_eq!(dry["left"], real["left"]);
        assert_eq!(real["removed"], serde_json::json!([]));
        assert_eq!(s.count("SELECT count(*) FROM files WHERE pruned_at IS NOT NULL"), 0);
    }
}

both_stores! {
    fn prune_dry_run_names_exactly_what_prune_removes_and_forgets() {
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"),
            "[retention]\narchive_days = 5\nquarantine_days = 5\nledger_days = 5\n\
             [[dataset]]\nname = \"typed\"\nmax_bad_records = 3\ncolumns = [{ name = \"id\", type = \"int\" }]\n").unwrap();
        s.drop_file("orders/a.csv", b"id\n1\n");
        s.drop_file("orders/bad.csv", b"id\n\"x\n");
        s.drop_file("typed/r.csv", b"id\n1\nx\n");
        s.drop_file("orders/young-bad.csv", b"id\n\"y\n");
        s.ferry_ok(&["run"], 3);
        s.drop_file("orders/dup.csv", b"id\n1\n");
        s.ferry_ok(&["run"], 0);
        s.query("UPDATE files SET finished_at = '2020-01-01T00:00:00Z' WHERE path <> 'orders/young-bad.csv'");

        let dry: Value = serde_json::from_slice(&s.ferry_ok(&["prune", "--dry-run", "--json"], 0).stdout).unwrap();
        let before = tree(&s.root);
        assert_eq!(s.count("SELECT count(*) FROM files WHERE pruned_at IS NOT NULL"), 0);
        let real: Value = serde_json::from_slice(&s.ferry_ok(&["prune", "--json"], 0).stdout).unwrap();
        for k in ["areas", "removed", "forgotten", "ledger_rows", "left"] {
            assert_eq!(dry[k], real[k], "{k}: dry {dry} real {real}");
        }
        // The quarantined file and the duplicate are forgotten in the same pass that removes
        // their files, and the dry run said so.
        assert_eq!(real["ledger_rows"], 2, "{real}");
        let removed: Vec<&str> = real["removed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(removed.len(), 6, "{removed:?}");
        for p in &removed {
            assert!(before.contains_key(*p), "{p} listed but was not there");
            assert!(!s.root.join(p).exists(), "{p} listed but not removed");
        }
        assert!(removed.contains(&"quarantine/orders/bad.csv.reason.json"), "{removed:?}");
        assert!(removed.contains(&"quarantine/typed/r.csv.rejects.ndjson"), "{removed:?}");
        assert!(s.root.join("quarantine/orders/young-bad.csv").exists());
    }
}

/// A folder in quarantine/ replaced by a link before a run: the bad file is never written
/// through it; it waits in processing/ (exit 5) and is placed once the folder is real again.
#[test]
fn placement_never_writes_through_a_symlinked_folder() {
    let s = Spool::new();
    let outside = s.scratch("outside");
    fs::create_dir_all(s.root.join("quarantine")).unwrap();
    symlink(&outside, s.root.join("quarantine/acme")).unwrap();
    s.drop_file("acme/bad.csv", b"id\n\"x\n");
    s.ferry_ok(&["run"], 5);
    assert!(tree(&outside).is_empty(), "{:?}", tree(&outside));
    assert_eq!(s.leftover_inputs().len(), 1);
    fs::remove_file(s.root.join("quarantine/acme")).unwrap();
    s.ferry_ok(&["run"], 0);
    assert!(Path::new(&s.root.join("quarantine/acme/bad.csv")).exists());
    assert_every_place_holds_its_file(&s);
}
