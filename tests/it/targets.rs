//! Remote export targets (`[[target]]`, `--to sftp://… | ftp(s)://… | s3://…`): batches arrive
//! whole under their final names with manifests and done markers, the watermark moves only after
//! them, kill -9 at any instant then a re-run leaves every record in exactly one batch — against
//! real servers (OpenSSH, vsftpd with TLS, SeaweedFS) started per test on loopback.

use crate::export::{check_batches, drop_events, kill_exports_then_finish_at};
use crate::harness::*;
use crate::seaweed::Seaweed;
use crate::sshd::Sshd;
use crate::vsftpd::Vsftpd;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// A source block turned into a target block (a target has no pulling settings).
fn as_target(source: &str) -> String {
    source
        .replace("[[source]]", "[[target]]")
        .replace("settle = \"0s\"\n", "")
}

/// `[[target]]` blocks `sftp-out` (the server's folder), `ftps-out` and `s3-out` (the folder
/// and the prefix given).
fn three_targets(
    sshd: &Sshd,
    ftp: &Vsftpd,
    s3: &Seaweed,
    (folder, prefix): (&str, &str),
) -> String {
    format!(
        "{}{}{}",
        as_target(&sshd.source("sftp-out", "")),
        as_target(&ftp.source("ftps-out", folder, "")),
        as_target(&s3.source("s3-out", prefix, "")),
    )
}

/// The events dataset: 3 files of 40 records.
fn events(s: &Spool, targets: &str) -> u64 {
    fs::write(s.root.join("ferry.toml"), targets).unwrap();
    let mut next = 0;
    drop_events(s, "a", 3, 40, &mut next);
    s.ferry_ok(&["run"], 0);
    next
}

/// The objects of an S3 prefix, downloaded into a local folder (to check as one).
fn download(s3: &Seaweed, prefix: &str, into: &Path) -> PathBuf {
    let _ = fs::remove_dir_all(into);
    fs::create_dir_all(into).unwrap();
    for key in s3.objects(prefix).keys() {
        let bytes = s3.get(&format!("{prefix}{key}")).unwrap();
        fs::write(into.join(key), bytes).unwrap();
    }
    into.to_path_buf()
}

fn ids(s: &Spool) -> Vec<i64> {
    s.query("SELECT _id FROM ev ORDER BY _id")
        .into_iter()
        .map(|r| r[0].as_ref().unwrap().parse().unwrap())
        .collect()
}

/// Every record once, in id order, in batches of `rows`.
fn assert_every_record_once(s: &Spool, dir: &Path, total: usize) {
    let (rows, ranges) = check_batches(dir);
    assert_eq!(rows.len(), total, "{:?}", tree(dir));
    let want: Vec<(i64, i64)> = ids(s).chunks(25).map(|c| (c[0], c[c.len() - 1])).collect();
    assert_eq!(ranges, want);
    crate::export::assert_in_stored_order(s, &rows, total as u64);
}

both_stores! {
    fn batches_exported_to_sftp_ftps_and_s3_arrive_whole_and_the_watermark_follows() {
        let (sshd, ftp, s3) = (Sshd::start(), Vsftpd::start_tls(), Seaweed::start());
        let s = Spool::new();
        let config =
            three_targets(&sshd, &ftp, &s3, ("out", "out/ev")) + &as_target(&s3.source("s3-pq", "pq", ""));
        let total = events(&s, &config) as usize;
        let (code, view) = json_any(&s, &["config", "check", "--json"]);
        assert_eq!(code, Some(0), "{view}");
        assert!(view["targets"].as_array().unwrap().iter().all(|t| t["reached"] == true));
        for target in ["sftp-out", "ftps-out", "s3-out"] {
            s.ferry_ok(&["export", "ev", "--target", target, "--max-rows", "25"], 0);
        }
        let sftp_dir = sshd.remote.clone();
        let ftp_dir = ftp.root.join("out");
        let s3_dir = download(&s3, "out/ev/", &s.scratch("s3"));
        for dir in [&sftp_dir, &ftp_dir, &s3_dir] {
            assert_every_record_once(&s, dir, total);
            assert!(tree(dir).keys().all(|k| !k.starts_with('.')), "{:?}", tree(dir));
        }
        // The same bytes everywhere, and as a local export writes them.
        let local = s.scratch("local");
        s.ferry_ok(
            &["export", "ev", "--to", local.to_str().unwrap(), "--max-rows", "25"],
            0,
        );
        let want = tree(&local);
        let strip = |t: BTreeMap<String, String>| -> BTreeMap<String, String> {
            // Manifests name their target; data files and markers are the same bytes.
            t.into_iter().filter(|(k, _)| !k.ends_with(".manifest.json")).collect()
        };
        assert_eq!(strip(tree(&sftp_dir)), strip(want.clone()));
        assert_eq!(strip(tree(&ftp_dir)), strip(want.clone()));
        assert_eq!(strip(tree(&s3_dir)), strip(want));

        // The URL of a [[target]] given to --to: that target (its login), the same watermark.
        let ftps_url = ftp
            .source("x", "out", "")
            .lines()
            .find_map(|l| l.strip_prefix("url = \""))
            .unwrap()
            .trim_end_matches('"')
            .to_string();
        let again = s.json(&["export", "ev", "--to", &ftps_url, "--json"]);
        assert_eq!(again["target"], "ftps-out");
        assert_eq!(again["rows"], 0);
        // New records: only they go out, in a batch of their own.
        let mut next = total as u64;
        drop_events(&s, "b", 1, 10, &mut next);
        s.ferry_ok(&["run"], 0);
        let out = s.json(&["export", "ev", "--target", "s3-out", "--max-rows", "25", "--json"]);
        assert_eq!(out["rows"], 10);
        assert_eq!(out["dir"], format!("s3://inbox/out/ev"));
        let listed = s.json(&["export", "--list", "--json"]);
        let s3_row = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == "s3-out")
            .unwrap()
            .clone();
        assert_eq!(s3_row["pending_records"], 0);
        // Parquet into the bucket, read back whole.
        s.ferry_ok(&["export", "ev", "--target", "s3-pq", "--format", "parquet"], 0);
        let pq = download(&s3, "pq/", &s.scratch("pq"));
        let files: Vec<PathBuf> = tree(&pq)
            .keys()
            .filter(|k| k.ends_with(".parquet"))
            .map(|k| pq.join(k))
            .collect();
        let seen = crate::parquet::read_parquet(&files);
        let rows: usize = files
            .iter()
            .map(|f| seen[f.to_str().unwrap()]["duckdb"]["rows"].as_array().unwrap().len())
            .sum();
        assert_eq!(rows, total + 10);
    }
}

#[test]
fn kill_9_during_exports_to_sftp_ftps_and_s3_then_every_record_is_in_exactly_one_batch() {
    let (sshd, ftp, s3) = (Sshd::start(), Vsftpd::start_tls(), Seaweed::start());
    let s = Spool::new();
    let total = events(&s, &three_targets(&sshd, &ftp, &s3, ("k", "k/"))) as usize;
    let sftp = ["export", "ev", "--target", "sftp-out", "--max-rows", "25"];
    kill_exports_then_finish_at(&s, &sftp, &|| tree(&sshd.remote), 25, 150);
    assert_every_record_once(&s, &sshd.remote, total);
    let ftps = ["export", "ev", "--target", "ftps-out", "--max-rows", "25"];
    let dir = ftp.root.join("k");
    kill_exports_then_finish_at(&s, &ftps, &|| tree(&dir), 25, 150);
    assert_every_record_once(&s, &dir, total);

    let s3_args = [
        "export",
        "ev",
        "--target",
        "s3-out",
        "--max-rows",
        "25",
        "--format",
        "parquet",
    ];
    kill_exports_then_finish_at(&s, &s3_args, &|| s3.objects("k/"), 25, 150);
    let dir = download(&s3, "k/", &s.scratch("k"));
    let parquet: Vec<PathBuf> = tree(&dir)
        .keys()
        .filter(|k| k.ends_with(".parquet"))
        .map(|k| dir.join(k))
        .collect();
    assert_eq!(parquet.len(), total.div_ceil(25));
    let seen = crate::parquet::read_parquet(&parquet);
    let mut got: Vec<i64> = Vec::new();
    for f in &parquet {
        for row in seen[f.to_str().unwrap()]["pyarrow"]["rows"]
            .as_array()
            .unwrap()
        {
            got.push(row[0].as_str().unwrap().parse().unwrap());
        }
    }
    assert_eq!(got, ids(&s), "every record once, in id order");
}

#[test]
fn a_stray_upload_is_removed_and_a_published_batch_is_never_written_again() {
    let sshd = Sshd::start();
    let s = Spool::new();
    let total = events(&s, &as_target(&sshd.source("out", ""))) as usize;
    let args = ["export", "ev", "--target", "out", "--max-rows", "25"];
    // Killed after the first batch was published but before it was recorded.
    let died = s
        .cmd()
        .args(args)
        .env("FERRY_FAULT_EXPORT_DIE", "written")
        .output()
        .unwrap();
    assert_eq!(died.status.code(), Some(137));
    let before = tree(&sshd.remote);
    assert_eq!(before.len(), 3, "{before:?}");
    // What an upload cut short leaves: a hidden temp name.
    sshd.put(".ev-000000000026-000000000050.csv.4242.ferry-tmp", b"n,la");
    let out = s.json(&[
        "export",
        "ev",
        "--target",
        "out",
        "--max-rows",
        "25",
        "--json",
    ]);
    assert_eq!(out["stray_temp_files_removed"], 1);
    assert_eq!(out["batches"][0]["resumed"], true);
    let after = tree(&sshd.remote);
    for (name, hash) in &before {
        assert_eq!(after.get(name), Some(hash), "{name} written again");
    }
    assert_every_record_once(&s, &sshd.remote, total);
}

#[test]
fn targets_are_refused_with_the_reason_before_anything_is_recorded() {
    let s3 = Seaweed::start();
    let s = Spool::new();
    let wrong = s3
        .source("s3-out", "x/", "")
        .replace("FERRY_TEST_SECRET", "FERRY_TEST_WRONG_SECRET");
    events(&s, &as_target(&wrong));
    // `config check` reaches each target: refused, with the reason.
    let (code, view) = json_any(&s, &["config", "check", "--json"]);
    assert_eq!(code, Some(2));
    assert_eq!(view["targets"][0]["name"], "s3-out");
    assert_eq!(view["targets"][0]["reached"], false);
    // A wrong secret: refused (exit 2), nothing exported, no target recorded.
    let out = s.ferry(&["export", "ev", "--target", "s3-out"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s3.objects("x/").is_empty());
    assert_eq!(s.count_or_zero("SELECT count(*) FROM exports"), 0);
    // An SFTP URL alone has no login: a [[target]] is needed.
    let out = s.ferry(&["export", "ev", "--to", "sftp://127.0.0.1:1/out"]);
    assert_eq!(out.status.code(), Some(2));
    // A source's pulling settings are not a target's.
    fs::write(
        s.root.join("ferry.toml"),
        as_target(&s3.source("t", "x/", "after = \"delete\"\n")),
    )
    .unwrap();
    assert_eq!(
        s.ferry(&["export", "ev", "--target", "t"]).status.code(),
        Some(2)
    );
}

#[test]
fn a_batch_larger_than_one_part_is_uploaded_in_parts_and_arrives_whole() {
    let s3 = Seaweed::start();
    let s = Spool::new();
    fs::write(
        s.root.join("ferry.toml"),
        as_target(&s3.source("big", "big/", "")),
    )
    .unwrap();
    // About 37 MB of CSV in one batch: two parts of 16 MiB and a last, shorter one.
    let mut body = String::from("n,label\n");
    for i in 0..400_000 {
        body.push_str(&format!(
            "{i},\"a label long enough to make the batch big, {i:>40}\"\n"
        ));
    }
    s.drop_file("ev/big.csv", body.as_bytes());
    s.ferry_ok(&["run"], 0);
    s.ferry_ok(
        &["export", "ev", "--target", "big", "--max-rows", "1000000"],
        0,
    );
    let local = s.scratch("local");
    s.ferry_ok(
        &[
            "export",
            "ev",
            "--to",
            local.to_str().unwrap(),
            "--max-rows",
            "1000000",
        ],
        0,
    );
    let name = "ev-000000000001-000000400000.csv";
    let here = fs::read(local.join(name)).unwrap();
    assert!(here.len() > 2 * (16 << 20), "{} bytes", here.len());
    let there = s3.get(&format!("big/{name}")).unwrap();
    assert_eq!(sha256_hex(&there), sha256_hex(&here));
}
