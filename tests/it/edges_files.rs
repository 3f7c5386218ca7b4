//! Trust at the edges, files: what ferry does with files that change under it, that are not
//! files, that crash it, that it cannot read, name or place. Named after what once broke.

use crate::harness::*;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Every file under `dir` by relative path (raw bytes kept), excluding ferry's own bookkeeping.
fn names(dir: &Path) -> BTreeSet<PathBuf> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .flatten()
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.path().strip_prefix(dir).unwrap().to_path_buf())
        .filter(|p| !p.starts_with(".owners"))
        .collect()
}

#[test]
fn a_file_that_changed_after_it_was_judged_ready_goes_back() {
    let s = Spool::new();
    s.drop_file("t/grow.csv", b"id\n1\n2\n");
    s.drop_file("t/ok.csv", b"id\n3\n");
    // The writer comes back between the scan and the claim.
    let out = s
        .cmd()
        .args(["run", "--json"])
        .env("FERRY_FAULT_CHANGE_BEFORE_CLAIM", "grow")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["released"], 1);
    let files = s.files_by_path();
    assert_eq!(files.len(), 1, "nothing recorded of the changed file");
    assert_eq!(files["t/ok.csv"]["state"], "ingested");
    let back = s.incoming().join("t/grow.csv");
    assert_eq!(
        fs::read(&back).unwrap(),
        b"id\n1\n2\n\n",
        "back in place, whole"
    );
    assert!(names(&s.root.join("processing")).is_empty());

    // Once it is quiet, it loads whole, with the hash of what it holds now.
    backdate(&back);
    s.ferry_ok(&["run"], 0);
    let f = &s.files_by_path()["t/grow.csv"];
    assert_eq!(f["records"], 2);
    assert_eq!(f["sha256"], sha256_hex(b"id\n1\n2\n\n"));
}

#[test]
fn records_come_from_the_bytes_that_were_hashed() {
    let s = Spool::new();
    // Over the 4 MiB read-at-once size: hashed in one pass, parsed in a second.
    let mut body = String::from("id,v\n");
    for i in 0..250_000 {
        body.push_str(&format!("{i},value-{i:08}\n"));
    }
    assert!(body.len() > 4 << 20);
    s.drop_file("big/rewritten.csv", body.as_bytes());
    let out = s
        .cmd()
        .args(["run", "--json"])
        .env("FERRY_FAULT_REWRITE_BETWEEN_PASSES", "rewritten")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(s.count("SELECT count(*) FROM files"), 0, "nothing recorded");
    assert_eq!(
        s.count("SELECT count(*) FROM sqlite_master WHERE name = 'big'"),
        0,
        "no records stored under the old hash"
    );
    let back = s.incoming().join("big/rewritten.csv");
    let now = fs::read(&back).unwrap();
    assert_eq!(now.len(), body.len());
    assert_ne!(now, body.as_bytes(), "the fault did rewrite it");

    s.ferry_ok(&["run"], 0);
    let f = &s.files_by_path()["big/rewritten.csv"];
    let archived = fs::read(s.root.join(f["stored_at"].as_str().unwrap())).unwrap();
    assert_eq!(f["sha256"], sha256_hex(&archived));
    assert_eq!(archived, now);
    // The stored records are the rewritten file's: its first record's id.
    let first_id =
        String::from_utf8_lossy(&now[5..now[5..].iter().position(|&b| b == b',').unwrap() + 5])
            .into_owned();
    assert_eq!(
        s.query("SELECT id FROM big ORDER BY _id LIMIT 1"),
        [[Some(first_id)]]
    );
    assert_eq!(s.count("SELECT count(*) FROM big"), 250_000);
}

#[test]
fn fifos_and_devices_are_never_opened() {
    let s = Spool::new();
    let keep = s.scratch("keep");
    fs::write(keep.join("ok.csv"), "a\n1\n").unwrap();
    backdate(&keep.join("ok.csv"));
    mkfifo(&keep.join("pipe.csv"));
    if is_root() {
        let dev = std::ffi::CString::new(keep.join("dev.csv").as_os_str().as_bytes()).unwrap();
        let rc = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) };
        assert_eq!(rc, 0, "mknod");
    }
    let mut run = s
        .cmd()
        .args(["run", "--keep", keep.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(
        wait_within(&mut run, Duration::from_secs(30)).code(),
        Some(3)
    );
    let files = s.files_by_path();
    for special in ["pipe.csv", "dev.csv"]
        .iter()
        .filter(|n| files.contains_key(**n))
    {
        let f = &files[*special];
        assert_eq!(f["error_kind"], "special_file", "{special}");
        let at = s.root.join(f["stored_at"].as_str().unwrap());
        assert!(
            fs::symlink_metadata(&at).is_err(),
            "{special}: never copied"
        );
        let mut reason = at.file_name().unwrap().to_os_string();
        reason.push(".reason.json");
        assert!(
            at.with_file_name(reason).is_file(),
            "{special}: its reason is written"
        );
    }
    assert_eq!(files["ok.csv"]["state"], "ingested");
    assert!(names(&s.root.join("processing")).is_empty());

    // Moved through the spool, a FIFO goes to quarantine as it is (a rename opens nothing).
    mkfifo(&s.incoming().join("pipe.csv"));
    let mut run = s.cmd().arg("run").stdout(Stdio::null()).spawn().unwrap();
    assert_eq!(
        wait_within(&mut run, Duration::from_secs(30)).code(),
        Some(3)
    );
    let f = &s.files_by_path()["pipe.csv"];
    let q = s.root.join(f["stored_at"].as_str().unwrap());
    assert!(fs::symlink_metadata(&q).unwrap().file_type().is_fifo());

    // A FIFO given as the config file is refused at once.
    let cfg = s.scratch("cfg").join("ferry.toml");
    mkfifo(&cfg);
    let mut check = s
        .cmd()
        .args(["--config", cfg.to_str().unwrap(), "config", "check"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(
        wait_within(&mut check, Duration::from_secs(10)).code(),
        Some(2)
    );
}

use std::os::unix::fs::FileTypeExt;

#[test]
fn a_file_that_crashes_ferry_is_set_aside_after_max_attempts() {
    let s = Spool::new();
    fs::write(s.root.join("ferry.toml"), "max_attempts = 3\nworkers = 2\n").unwrap();
    s.drop_file("feed/poison.csv", b"id\n1\n");
    for n in ["a", "b", "c", "d"] {
        s.drop_file(&format!("feed/{n}.csv"), format!("id\n{n}\n").as_bytes());
    }
    let mut codes = Vec::new();
    for _ in 0..8 {
        let out = s
            .cmd()
            .arg("run")
            .env("FERRY_FAULT_ABORT_ON", "poison")
            .output()
            .unwrap();
        codes.push(out.status.code());
        if out.status.code().is_some() {
            break;
        }
    }
    // Each crash counts against the files in flight; at 3 the poison is set aside and the run
    // finishes: some crashed runs, then one that exits with "quarantined".
    assert_eq!(codes.last(), Some(&Some(3)), "{codes:?}");
    assert!(codes.len() >= 3 && codes.len() <= 5, "{codes:?}");
    let files = s.files_by_path();
    let poison = &files["feed/poison.csv"];
    assert_eq!(poison["error_kind"], "poison");
    assert_eq!(
        fs::read(s.root.join(poison["stored_at"].as_str().unwrap())).unwrap(),
        b"id\n1\n"
    );
    for n in ["a", "b", "c", "d"] {
        assert_eq!(files[&format!("feed/{n}.csv")]["state"], "ingested", "{n}");
    }
    assert_eq!(
        s.count("SELECT count(*) FROM feed"),
        4,
        "each innocent file once"
    );
    assert!(names(&s.root.join("processing")).is_empty());
    assert!(names(&s.incoming()).is_empty());
}

#[test]
fn long_file_names_fit_with_their_sidecars() {
    let s = Spool::new();
    fs::write(
        s.root.join("ferry.toml"),
        "[[dataset]]\nname = \"typed\"\nmax_bad_records = 5\n\
         columns = [{ name = \"n\", type = \"int\" }]\n",
    )
    .unwrap();
    let long = |c: char, ext: &str| format!("{}{ext}", c.to_string().repeat(255 - ext.len()));
    let good = long('g', ".csv");
    let bad = long('b', ".csv");
    let partial = long('p', ".csv");
    let accented = format!("{}.csv", "é".repeat(125));
    s.drop_file(&format!("feed/{good}"), b"a\n1\n");
    s.drop_file(&format!("feed/{bad}"), b"a,b\n1\n");
    s.drop_file(&format!("typed/{partial}"), b"n\n1\nx\n3\n");
    s.drop_file(&format!("feed/{accented}"), b"a\n2\n");
    s.ferry_ok(&["run"], 3);
    // The same long name again, new content: the archive name takes a suffix, and still fits.
    s.drop_file(&format!("feed/{good}"), b"a\n9\n");
    s.ferry_ok(&["run"], 0);
    for dir in ["archive", "quarantine"] {
        for p in names(&s.root.join(dir)) {
            for c in p.components() {
                assert!(c.as_os_str().len() <= 255, "{}", p.display());
            }
        }
    }
    let rows = s.files();
    assert_eq!(rows.len(), 5);
    for f in &rows {
        let at = s.root.join(f["stored_at"].as_str().unwrap());
        assert!(at.is_file(), "{}", at.display());
        if f["state"] == "quarantined" {
            let mut reason = at.file_name().unwrap().to_os_string();
            reason.push(".reason.json");
            let r: serde_json::Value =
                serde_json::from_slice(&fs::read(at.with_file_name(reason)).unwrap()).unwrap();
            assert_eq!(r["path"], f["path"]);
        }
        if let Some(rejects) = f["rejects_at"].as_str() {
            assert!(s.root.join(rejects).is_file());
        }
    }
    assert!(names(&s.root.join("processing")).is_empty());
    assert!(names(&s.incoming()).is_empty());
}

#[test]
fn a_file_that_cannot_be_placed_fails_the_exit_code() {
    let s = Spool::new();
    s.drop_file("feed/a.csv", b"x\n1\n");
    let flag = s.scratch("flags").join("full");
    fs::write(&flag, "").unwrap();
    let out = s
        .cmd()
        .args(["run", "--json"])
        .env("FERRY_FAULT_FAIL_PLACE", &flag)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["unplaced"], 1);
    assert_eq!(report["problems"][0]["path"], "feed/a.csv");
    // Recorded once; the next run places it, without loading it again.
    fs::remove_file(&flag).unwrap();
    s.ferry_ok(&["run"], 0);
    let f = &s.files_by_path()["feed/a.csv"];
    assert!(s.root.join(f["stored_at"].as_str().unwrap()).is_file());
    assert_eq!(s.count("SELECT count(*) FROM feed"), 1);
    assert!(names(&s.root.join("processing")).is_empty());
}

#[test]
fn non_utf8_names_are_kept_exactly() {
    let s = Spool::new();
    let raw = |b: &[u8]| PathBuf::from(OsStr::from_bytes(b));
    for (dir, v) in [
        (&b"d\xff"[..], "ff"),
        (b"d\xfe", "fe"),
        (b"d\xef\xbf\xbd", "valid"),
    ] {
        let p = s.incoming().join(raw(dir)).join("a.csv");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, format!("v\n{v}\n")).unwrap();
        backdate(&p);
    }
    let bad = s.incoming().join(raw(b"q\xff.csv"));
    fs::write(&bad, "a,b\n1\n").unwrap();
    backdate(&bad);
    s.ferry_ok(&["run"], 3);
    let reg: BTreeSet<(String, String)> = s
        .query("SELECT name, table_name FROM datasets")
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    let names_only: BTreeSet<&str> = reg.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names_only, BTreeSet::from(["d%FF", "d%FE", "d\u{FFFD}"]));
    for (name, table) in &reg {
        let vals = s.query(&format!("SELECT v FROM \"{table}\""));
        assert_eq!(vals.len(), 1, "{name}: one record, its own");
    }
    // Archived under the exact bytes.
    let archived: Vec<PathBuf> = names(&s.root.join("archive"))
        .into_iter()
        .map(|p| p.iter().skip(1).collect())
        .collect();
    assert!(archived.contains(&raw(b"d\xff/a.csv")), "{archived:?}");
    assert!(archived.contains(&raw(b"d\xfe/a.csv")), "{archived:?}");

    // Retry finds a quarantined file whose name is not UTF-8.
    let q = s.files_by_path()["q%FF.csv"].clone();
    assert_eq!(q["state"], "quarantined");
    let id = q["id"].as_i64().unwrap().to_string();
    s.ferry_ok(&["quarantine", "retry", &id], 3);
    let rows: Vec<serde_json::Value> = s
        .files()
        .into_iter()
        .filter(|f| f["path"] == "q%FF.csv")
        .collect();
    assert_eq!(
        rows.len(),
        2,
        "the retry found the file and recorded a second attempt"
    );
    assert_eq!(rows[1]["attempt"], 2);
    let at = s.root.join(OsStr::from_bytes(&percent_decoded(
        rows[1]["stored_at"].as_str().unwrap(),
    )));
    assert_eq!(fs::read(at).unwrap(), b"a,b\n1\n");
}

/// The bytes a ledger path names (`%XX` escapes).
fn percent_decoded(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[test]
fn unreadable_files_and_folders_are_reported_and_left() {
    let s = Spool::new();
    s.drop_file("ok.csv", b"a\n1\n");
    s.drop_file("secret.csv", b"a\n2\n");
    s.drop_file("locked/inside.csv", b"a\n3\n");
    fs::set_permissions(
        s.incoming().join("secret.csv"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    fs::set_permissions(
        s.incoming().join("locked"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let mut cmd = if is_root() {
        // Root reads anything: run ferry as an unprivileged user, for real permissions.
        let top = s.root.parent().unwrap();
        for p in [top.to_path_buf(), s.root.clone()] {
            fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        }
        for e in walkdir::WalkDir::new(&s.root)
            .min_depth(1)
            .into_iter()
            .flatten()
        {
            let n = e.file_name().to_string_lossy();
            if n != "secret.csv" && n != "locked" && n != "inside.csv" {
                std::os::unix::fs::chown(e.path(), Some(65534), Some(65534)).unwrap();
            }
        }
        std::os::unix::fs::chown(&s.root, Some(65534), Some(65534)).unwrap();
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", FERRY]);
        c
    } else {
        std::process::Command::new(FERRY)
    };
    let out = cmd
        .args(["--root", s.root.to_str().unwrap(), "run", "--json"])
        .env_remove("FERRY_CONFIG")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ingested"], 1);
    let problems: Vec<String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["path"].as_str().unwrap(),
                p["what"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("secret.csv") && p.contains("ermission")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("locked") && p.contains("ermission")),
        "{problems:?}"
    );
    // Left exactly where they were.
    fs::set_permissions(
        s.incoming().join("locked"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    assert!(s.incoming().join("secret.csv").exists());
    assert!(s.incoming().join("locked/inside.csv").exists());
}

#[test]
fn ctrl_c_stops_a_run_between_files_and_loses_nothing() {
    let s = Spool::new();
    fs::write(s.root.join("ferry.toml"), "workers = 2\n").unwrap();
    for i in 0..200 {
        s.drop_file(&format!("feed/{i:03}.csv"), format!("n\n{i}\n").as_bytes());
    }
    let mut run = s
        .cmd()
        .args(["run", "--json"])
        .env("FERRY_FAULT_SLOW_MS", "25")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_files(&s, 10);
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    let status = wait_within(&mut run, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));
    let mut out = String::new();
    std::io::Read::read_to_string(run.stdout.as_mut().unwrap(), &mut out).unwrap();
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["interrupted"], true);
    let done = s.count("SELECT count(*) FROM files");
    assert!(done < 200, "stopped before the end ({done})");
    assert!(
        names(&s.root.join("processing")).is_empty(),
        "nothing left half-done"
    );
    let left = names(&s.incoming()).len() as i64;
    assert_eq!(
        done + left,
        200,
        "every file is either done or still waiting"
    );
    // The next run takes the rest; each file once.
    s.ferry_ok(&["run"], 0);
    assert_eq!(
        s.count("SELECT count(*) FROM files WHERE state = 'ingested'"),
        200
    );
    assert_eq!(s.count("SELECT count(DISTINCT n) FROM feed"), 200);
    assert_eq!(s.count("SELECT count(*) FROM feed"), 200);
}

#[test]
fn lone_cr_lines_and_error_lines_agree() {
    let s = Spool::new();
    s.drop_file("cr/a.csv", b"a,b\r1,2\r3,4\r5,6\r");
    s.drop_file("j/bad.ndjson", b"{\"a\":1}\n{\"a\":\"\\ud800\"}\n");
    // Blank lines carry no record, but they are not passed over in silence.
    s.drop_file("blank/a.csv", b"a,b\n1,2\n\n3,4\n\n");
    s.ferry_ok(&["run"], 3);
    let blank = &s.files_by_path()["blank/a.csv"];
    assert_eq!(blank["records"], 2);
    assert_eq!(
        blank["warnings"],
        serde_json::json!(["1 blank line skipped (line 3)"])
    );
    assert_eq!(
        s.query("SELECT _line FROM cr ORDER BY _id"),
        [["2"], ["3"], ["4"]].map(|r| r.map(|v| Some(v.to_string())).to_vec())
    );
    let f = &s.files_by_path()["j/bad.ndjson"];
    assert_eq!(f["error_kind"], "json.syntax");
    assert_eq!(f["error_line"], 2);
    let msg = f["error_message"].as_str().unwrap();
    assert!(msg.contains("line 2") && !msg.contains("line 1"), "{msg}");
}

/// A gzip file that decompresses to `head` followed by `mib` MiB of `x`: the same 1 MiB member
/// repeated (gzip allows members one after another), so it is small to write and to store.
fn gzip_bomb(head: &[u8], mib: usize) -> Vec<u8> {
    use std::io::Write;
    let member = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let xs = vec![b'x'; 1 << 20];
    let mut out = member(&[head, &xs[..]].concat());
    let rest = member(&xs);
    for _ in 1..mib {
        out.extend_from_slice(&rest);
    }
    out
}

#[test]
fn lines_of_any_length_are_refused_with_flat_memory() {
    let s = Spool::new();
    let mut huge = b"a,b\n1,".to_vec();
    huge.resize(100 << 20, b'y');
    huge.extend_from_slice(b"\n2,3\n");
    s.drop_file("plain/huge.csv", &huge);
    s.drop_file("gz/line.csv.gz", &gzip_bomb(b"a\n", 1024));
    s.drop_file("gz/line.ndjson.gz", &gzip_bomb(b"{\"a\":\"", 1024));
    s.drop_file("gz/array.json.gz", &gzip_bomb(b"[{\"a\":\"", 1024));
    assert!(
        fs::metadata(s.incoming().join("gz/line.csv.gz"))
            .unwrap()
            .len()
            < 8 << 20
    );
    let mut cmd = s.cmd();
    cmd.arg("run");
    let (code, rss) = run_measuring_rss(cmd);
    assert_eq!(code, Some(3));
    assert!(rss < 200.0, "peak RSS {rss:.0} MiB");
    let files = s.files_by_path();
    assert_eq!(files["plain/huge.csv"]["error_kind"], "csv.line_too_long");
    assert_eq!(files["plain/huge.csv"]["error_line"], 2);
    assert_eq!(files["plain/huge.csv"]["error_offset"], 4);
    assert_eq!(files["gz/line.csv.gz"]["error_kind"], "csv.line_too_long");
    assert_eq!(
        files["gz/line.ndjson.gz"]["error_kind"],
        "json.record_too_long"
    );
    assert_eq!(
        files["gz/array.json.gz"]["error_kind"],
        "json.record_too_long"
    );
    // The next run has nothing to do: the files are set aside, not retried into a crash.
    s.ferry_ok(&["run"], 0);
}

#[test]
fn a_header_of_numbers_is_a_data_row_not_columns() {
    let s = Spool::new();
    fs::write(
        s.root.join("ferry.toml"),
        "[[dataset]]\nname = \"nohead\"\nheader = false\nnames = [\"a\", \"b\"]\n\n\
         [[dataset]]\nname = \"typed\"\ncolumns = [{ name = \"a\", type = \"int\" }, { name = \"b\" }]\n",
    )
    .unwrap();
    // A writer paused mid-file and the tail arrived as a file of its own.
    s.drop_file("feed/head.csv", b"a,b\n1,x\n");
    s.ferry_ok(&["run"], 0);
    for (name, body) in [
        ("tail.csv", &b"2,20\n3,30\n"[..]),
        ("neg.csv", b"-1.5,1e3\n"),
        ("comma.csv", b"7;8,5;9\n1;2;3\n"),
    ] {
        s.drop_file(&format!("feed/{name}"), body);
    }
    s.drop_file("nohead/a.csv", b"2,20\n3,30\n");
    s.drop_file("typed/a.csv", b"2,20\n3,30\n");
    s.ferry_ok(&["run"], 3);
    let files = s.files_by_path();
    for name in ["tail.csv", "neg.csv", "comma.csv"] {
        assert_eq!(
            files[&format!("feed/{name}")]["error_kind"],
            "csv.numeric_header",
            "{name}"
        );
    }
    assert_eq!(
        s.columns("feed"),
        ["_id", "_file_id", "_line", "a", "b"],
        "no column named 2"
    );
    assert_eq!(
        files["nohead/a.csv"]["records"], 2,
        "header = false takes them as data"
    );
    // Declared columns: drift, under the dataset's policy (fail by default).
    assert_eq!(files["typed/a.csv"]["error_kind"], "schema.new_column");
}

/// Regression: the CSV reader once took the first byte after a buffer refill, in the middle of
/// an unquoted field, for a stray quote — every file bigger than the pieces the decoding layers
/// hand over was refused. Fields of every length, doubled quotes, newlines inside quotes and
/// CRLF line ends land on read boundaries here: in memory, streamed (over 4 MiB) and gunzipped.
#[test]
fn fields_split_by_read_boundaries_load_whole() {
    let s = Spool::new();
    let mut csv = String::from("id,v,w\r\n");
    let mut want = Vec::new();
    let mut rng = Rng::new(7);
    while csv.len() < (4 << 20) + 300_000 {
        let i = want.len();
        let len = rng.below(90) as usize;
        let plain: String = (0..len)
            .map(|k| (b'a' + ((i + k) % 26) as u8) as char)
            .collect();
        let quoted = format!("{plain}\"\"\r\n{i}");
        csv.push_str(&format!("{i},{plain},\"{quoted}\"\r\n"));
        want.push((plain, quoted.replace("\"\"", "\"")));
    }
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(csv.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let small = csv[..csv[..300_000].rfind("\r\n").unwrap() + 2].to_string();
    s.drop_file("big/a.csv", csv.as_bytes());
    s.drop_file("gz/a.csv.gz", &gz);
    s.drop_file("small/a.csv", small.as_bytes());
    s.ferry_ok(&["run"], 0);
    for (table, rows) in [("big", want.len()), ("gz", want.len()), ("small", 0)] {
        let got = s.query(&format!("SELECT v, w, _line FROM {table} ORDER BY _line"));
        let n = if rows == 0 { got.len() } else { rows };
        assert!(n > 2_000, "{table}: {n} records");
        assert_eq!(got.len(), n, "{table}");
        for (i, row) in got.iter().enumerate() {
            let (v, w) = &want[i];
            let v = (!v.is_empty()).then(|| v.clone());
            assert_eq!(
                (&row[0], row[1].as_deref()),
                (&v, Some(w.as_str())),
                "{table} row {i}"
            );
            assert_eq!(row[2].as_deref(), Some((2 + 2 * i).to_string().as_str()));
        }
    }
}
