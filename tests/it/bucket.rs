//! S3 sources (R-remote) against a real S3-compatible server (SeaweedFS): objects load once
//! with their bucket origin and ETag in the ledger, listings are paginated, `after` copies and
//! deletes only after the commit, credentials come from the environment and wrong ones are
//! refused, TLS is verified (a private CA through `ca_file`), and keys that cannot be local
//! names are reported, never fetched.

use crate::harness::*;
use crate::remote::configure;
use crate::seaweed::Seaweed;

fn rows(s: &Spool, sql: &str) -> Vec<Vec<String>> {
    s.query(sql)
        .into_iter()
        .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
        .collect()
}

both_stores! {
    fn objects_pulled_from_a_bucket_load_once_with_their_etag() {
        let s3 = Seaweed::start();
        let s = Spool::new();
        configure(&s, &s3.source("acme", "partners/acme", ""));
        s3.put("partners/acme/a.csv", b"id,status\n1,new\n2,new\n");
        s3.put("partners/acme/2026/12/b.csv", b"id,status\n3,paid\n");
        // Another prefix, and a temp name: not this source's / not ready.
        s3.put("partners/other/c.csv", b"id,status\n9,other\n");
        s3.put("partners/acme/d.csv.part", b"id,status\n9,partial\n");
        let (code, report) = json_any(&s, &["run", "--json"]);
        assert_eq!(code, Some(0), "{report}");
        assert_eq!(
            waiting_rules(&report),
            vec![("acme/d.csv.part".to_string(), "temp_name".to_string())]
        );
        assert_eq!(s.count("SELECT count(*) FROM orders"), 3);
        assert_eq!(
            rows(&s, "SELECT path, state, remote_source, remote_path FROM files \
                      WHERE remote_source IS NOT NULL ORDER BY path"),
            vec![
                vec!["acme/2026/12/b.csv", "ingested", "acme", "2026/12/b.csv"],
                vec!["acme/a.csv", "ingested", "acme", "a.csv"],
            ]
        );
        // The version is the object's ETag, as the server reports it.
        let files = s.files();
        let a = files.iter().find(|f| f["path"] == "acme/a.csv").unwrap();
        assert_eq!(a["remote_version"], s3.etag("partners/acme/a.csv"), "{a}");
        // Kept in the bucket; pulled again, nothing is downloaded or recorded again.
        assert!(s3.get("partners/acme/a.csv").is_some());
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM files"), 2);
        // The same bytes uploaded again under a new name: a duplicate by content. New bytes
        // under an old name: a new version, loaded.
        s3.put("partners/acme/a-again.csv", b"id,status\n1,new\n2,new\n");
        s3.put("partners/acme/2026/12/b.csv", b"id,status\n3,paid\n4,new\n");
        s.ferry_ok(&["run"], 0);
        let mut states = rows(&s, "SELECT remote_path, state FROM files ORDER BY id");
        states.sort();
        assert_eq!(
            states,
            vec![
                vec!["2026/12/b.csv", "ingested"],
                vec!["2026/12/b.csv", "ingested"],
                vec!["a-again.csv", "duplicate"],
                vec!["a.csv", "ingested"],
            ]
        );
        assert_eq!(s.count("SELECT count(*) FROM orders"), 5);
    }
}

/// More objects than one listing page holds (1,000): every one is seen and loaded once. Also
/// the regression test of parallel downloads deadlocking the pipeline: many files of one size
/// (which wait for each other's turns) handed over by 8 download threads at once.
#[test]
fn a_prefix_longer_than_one_listing_page_is_pulled_whole() {
    let s3 = Seaweed::start();
    let s = Spool::new();
    configure(&s, &s3.source("acme", "big", "connections = 8"));
    let objects: Vec<(String, Vec<u8>)> = (0..1_050)
        .map(|i| {
            (
                format!("big/{:02}/f{i}.csv", i % 7),
                format!("id,status\n{i},new\n").into_bytes(),
            )
        })
        .collect();
    s3.put_many(&objects);
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 1_050);
    assert_eq!(s.count("SELECT count(DISTINCT id) FROM orders"), 1_050);
    assert_eq!(
        s.count("SELECT count(*) FROM files WHERE state = 'ingested'"),
        1_050
    );
    // The second poll lists all pages again and fetches nothing.
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM files"), 1_050);
}

#[test]
fn after_move_copies_then_deletes_and_after_delete_removes_only_loaded_objects() {
    let s3 = Seaweed::start();
    let s = Spool::new();
    configure(&s, &s3.source("acme", "in", "after = \"move:done\""));
    s3.put("in/x/one.csv", b"id,status\n7,new\n");
    s.ferry_ok(&["run"], 0);
    assert_eq!(s3.get("in/x/one.csv"), None);
    assert_eq!(s3.get("in/done/x/one.csv").unwrap(), b"id,status\n7,new\n");
    // Not pulled again from done/.
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM files"), 1);
    // A new object of the same name is moved beside the first, never over it.
    s3.put("in/x/one.csv", b"id,status\n8,new\n");
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 2);
    assert_eq!(s3.get("in/done/x/one.csv").unwrap(), b"id,status\n7,new\n");

    let s = Spool::new();
    configure(&s, &s3.source("acme", "del", "after = \"delete\""));
    s3.put("del/good.csv", b"id,status\n1,new\n");
    // Quarantined: committed with its reason, so it leaves the bucket too (kept in quarantine/).
    s3.put("del/bad.csv", b"id,status\nx,new\n");
    s.ferry_ok(&["run"], 3);
    assert_eq!(s3.get("del/good.csv"), None);
    assert_eq!(s3.get("del/bad.csv"), None);
    assert!(tree(&s.root.join("quarantine"))
        .keys()
        .any(|k| k.ends_with("bad.csv")));
}

#[test]
fn missing_or_wrong_credentials_are_refused_and_nothing_is_downloaded() {
    let s3 = Seaweed::start();
    s3.put("in/a.csv", b"id,status\n1,new\n");
    let block = s3.source("acme", "in", "");
    for (from, to) in [
        // Not set in ferry's environment.
        ("FERRY_TEST_SECRET", "FERRY_TEST_UNSET"),
        // Set, but wrong.
        ("FERRY_TEST_SECRET", "FERRY_TEST_WRONG_SECRET"),
        // A bucket that is not there.
        ("s3://inbox/", "s3://nosuchbucket/"),
    ] {
        let s = Spool::new();
        configure(&s, &block.replace(from, to));
        s.ferry_ok(&["run"], 2);
        let out = s.ferry(&["config", "check"]);
        assert_eq!(out.status.code(), Some(2), "{to}");
        let shown = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            !shown.contains("ferrytestsecret") && !shown.contains("wrongsecret"),
            "{shown}"
        );
        assert_eq!(s.count_or_zero("SELECT count(*) FROM files"), 0, "{to}");
        assert!(tree(&s.incoming()).is_empty(), "{to}");
    }
    assert!(s3.get("in/a.csv").is_some());
}

#[test]
fn keys_that_cannot_be_local_names_are_reported_not_fetched() {
    let s3 = Seaweed::start();
    let s = Spool::new();
    configure(&s, &s3.source("acme", "in", "depth = 1"));
    s3.put("in/ok.csv", b"id,status\n1,new\n");
    // A control character is legal in a key, never in a local name. (SeaweedFS itself refuses
    // `..`, backslashes and over-long keys, and folds `//`: the unit tests of `local_rel` and
    // the listing cover those.)
    s3.put("in/tab%09x.csv", b"id,status\n2,new\n");
    s3.put("in/one/two/deep.csv", b"id,status\n4,new\n");
    s.ferry_ok(&["run"], 5);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 1);
    let local = tree(&s.root);
    assert!(
        !local.keys().any(|k| k.contains('\t') || k.contains("deep")),
        "{local:?}"
    );
    // Reported by the dry run with the reasons.
    let (_, report) = json_any(&s, &["run", "--dry-run", "--json"]);
    let mut rules: Vec<String> = waiting_rules(&report)
        .into_iter()
        .map(|(p, r)| format!("{p} {r}"))
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        vec![
            "acme:one/two remote.not_fetched",
            "acme:tab\tx.csv remote.not_fetched",
        ],
        "{report}"
    );
}

/// https endpoints are verified: a server whose certificate a private CA signed is refused
/// without `ca_file`, and pulled from with it.
#[test]
fn tls_to_the_bucket_is_verified_against_the_ca_file() {
    let s3 = Seaweed::start_tls();
    s3.put("in/a.csv", b"id,status\n1,new\n");
    let with_ca = s3.source("acme", "in", "");
    let ca_line = format!("ca_file = \"{}\"\n", s3.ca.as_ref().unwrap().display());
    let s = Spool::new();
    configure(&s, &with_ca.replace(&ca_line, ""));
    s.ferry_ok(&["run"], 2);
    assert_eq!(s.count_or_zero("SELECT count(*) FROM files"), 0);
    let s = Spool::new();
    configure(&s, &with_ca);
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 1);
}

#[test]
fn a_pull_from_a_bucket_killed_at_any_point_and_run_again_loads_every_object_once() {
    let s3 = Seaweed::start();
    crate::remote::killed_pulls_load_every_file_once(
        |path, bytes| s3.put(&format!("in/{path}"), bytes),
        |extra| s3.source("acme", "in", extra),
    );
}
