//! FTP and FTPS sources (R-remote) against a real vsftpd: files load once, byte for byte
//! (binary transfers), with their origin in the ledger; names `ls` would read as options or
//! patterns are fetched like any other; FTPS verifies the server's certificate and resumes the
//! TLS session on data connections; a wrong password is refused; `after` acts after the
//! commit.

use crate::harness::*;
use crate::remote::configure;
use crate::vsftpd::Vsftpd;
use std::fs;

both_stores! {
    fn files_pulled_over_ftp_load_once_byte_for_byte() {
        let ftp = Vsftpd::start();
        let s = Spool::new();
        configure(&s, &ftp.source("acme", "out", ""));
        // CRLF line ends: an ASCII-mode transfer could rewrite them; the hash says it did not.
        let crlf = b"id,status\r\n1,new\r\n2,new\r\n".to_vec();
        ftp.put("out/a.csv", &crlf);
        ftp.put("out/2026/b.csv", b"id,status\n3,paid\n");
        // Names `LIST` would take for options or a pattern.
        ftp.put("out/-la.csv", b"id,status\n4,new\n");
        ftp.put("out/[x] *.csv", b"id,status\n5,new\n");
        ftp.put("out/c.csv.part", b"id,status\n9,partial\n");
        let (code, report) = json_any(&s, &["run", "--json"]);
        assert_eq!(code, Some(0), "{report}");
        assert_eq!(
            waiting_rules(&report),
            vec![("acme/c.csv.part".to_string(), "temp_name".to_string())]
        );
        assert_eq!(s.count("SELECT count(*) FROM orders"), 5);
        let mut paths: Vec<String> = s
            .query("SELECT remote_path FROM files WHERE remote_source = 'acme' AND state = 'ingested'")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect();
        paths.sort();
        assert_eq!(paths, vec!["-la.csv", "2026/b.csv", "[x] *.csv", "a.csv"]);
        let files = s.files();
        let a = files.iter().find(|f| f["path"] == "acme/a.csv").unwrap();
        assert_eq!(a["sha256"], sha256_hex(&crlf), "{a}");
        assert!(a["remote_version"].as_str().unwrap().starts_with("25:"), "{a}");
        // Kept on the server; pulled again, nothing is fetched or recorded again.
        assert!(ftp.root.join("out/a.csv").exists());
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM files"), 4);
        // New bytes under an old name: a new version, loaded.
        ftp.put("out/2026/b.csv", b"id,status\n3,paid\n6,new\n");
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM orders"), 7);
    }
}

#[test]
fn ftps_verifies_the_certificate_and_resumes_tls_on_data_connections() {
    let ftp = Vsftpd::start_tls();
    ftp.put("out/a.csv", b"id,status\n1,new\n");
    ftp.put("out/b.csv", b"id,status\n2,new\n");
    let block = ftp.source("acme", "out", "connections = 2");
    let ca_line = format!("ca_file = \"{}\"\n", ftp.ca.as_ref().unwrap().display());
    // The public roots do not know the private CA: refused, nothing fetched.
    let s = Spool::new();
    configure(&s, &block.replace(&ca_line, ""));
    s.ferry_ok(&["run"], 2);
    assert_eq!(s.count_or_zero("SELECT count(*) FROM files"), 0);
    // Plain FTP to a server that requires TLS: refused too (its login is refused).
    let s = Spool::new();
    configure(
        &s,
        &block.replace("ftps://", "ftp://").replace(&ca_line, ""),
    );
    s.ferry_ok(&["run"], 2);
    // A wrong password.
    let s = Spool::new();
    configure(
        &s,
        &block.replace("FERRY_TEST_FTP_PASSWORD", "FERRY_TEST_WRONG_SECRET"),
    );
    s.ferry_ok(&["run"], 2);
    s.ferry_ok(&["config", "check"], 2);
    assert_eq!(s.count_or_zero("SELECT count(*) FROM files"), 0);
    // Trusting the CA: listed and downloaded over TLS data connections that resume the
    // session (vsftpd refuses any that do not).
    let s = Spool::new();
    configure(&s, &block);
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 2);
    s.ferry_ok(&["config", "check"], 0);
}

/// `ls -l` lines give times to the minute: a file rewritten within its minute keeps its
/// version. Regression: such a file was taken at once, and its rewrite, the same size in the
/// same minute, was then mistaken for the file already loaded. Now a file is taken only once
/// its minute is over.
#[test]
fn a_file_listed_within_its_minute_waits_until_the_minute_is_over() {
    let ftp = Vsftpd::start();
    let s = Spool::new();
    configure(&s, &ftp.source("acme", "out", ""));
    ftp.put_aged("out/new.csv", b"id,status\n1,new\n", 0);
    let (code, report) = json_any(&s, &["run", "--json"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(
        waiting_rules(&report),
        vec![("acme/new.csv".to_string(), "settling".to_string())]
    );
    assert_eq!(s.count_or_zero("SELECT count(*) FROM files"), 0);
    // Rewritten in place, same size; once its minute is over it is taken, as it is now.
    ftp.put_aged("out/new.csv", b"id,status\n2,new\n", 61);
    s.ferry_ok(&["run"], 0);
    assert_eq!(
        s.query("SELECT id FROM orders"),
        vec![vec![Some("2".to_string())]]
    );
}

/// A listing time hours ahead of ferry's clock is the server's time zone or clock (`ls -l`
/// lines in local time), not a write within the last minute: the file is taken, not held for
/// hours.
#[test]
fn a_listing_time_hours_ahead_is_not_waited_for() {
    let ftp = Vsftpd::start();
    let s = Spool::new();
    configure(&s, &ftp.source("acme", "out", ""));
    let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(2 * 3600);
    ftp.put_at("out/a.csv", b"id,status\n1,new\n", ahead);
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 1);
}

#[test]
fn after_move_and_delete_over_ftp_act_only_on_committed_files() {
    let ftp = Vsftpd::start();
    let s = Spool::new();
    configure(&s, &ftp.source("acme", "out", "after = \"move:/done\""));
    ftp.put("out/x/one.csv", b"id,status\n7,new\n");
    s.ferry_ok(&["run"], 0);
    assert!(!ftp.root.join("out/x/one.csv").exists());
    assert_eq!(
        fs::read(ftp.root.join("done/x/one.csv")).unwrap(),
        b"id,status\n7,new\n"
    );
    // A new upload of the same size: a later time, so a new version.
    ftp.put_aged("out/x/one.csv", b"id,status\n8,new\n", 1800);
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 2);
    // Moved beside the first, never over it.
    assert_eq!(
        fs::read(ftp.root.join("done/x/one.csv")).unwrap(),
        b"id,status\n7,new\n"
    );
    assert_eq!(tree(&ftp.root.join("done/x")).len(), 2);

    let s = Spool::new();
    configure(&s, &ftp.source("acme", "del", "after = \"delete\""));
    ftp.put("del/good.csv", b"id,status\n1,new\n");
    ftp.put("del/bad.csv", b"id,status\nx,new\n");
    s.ferry_ok(&["run"], 3);
    assert!(!ftp.root.join("del/good.csv").exists());
    assert!(!ftp.root.join("del/bad.csv").exists());
}

#[test]
fn a_pull_over_ftp_killed_at_any_point_and_run_again_loads_every_file_once() {
    let ftp = Vsftpd::start();
    crate::remote::killed_pulls_load_every_file_once(
        |path, bytes| {
            ftp.put(&format!("out/{path}"), bytes);
        },
        |extra| ftp.source("acme", "out", extra),
    );
}

/// A file the FTP user may not read is reported (the run exits 5) and retried at the next pull;
/// the others load, and nothing of it is recorded.
#[test]
fn a_file_the_server_refuses_to_send_is_reported_and_the_others_load() {
    use std::os::unix::fs::PermissionsExt;
    let ftp = Vsftpd::start();
    let s = Spool::new();
    configure(&s, &ftp.source("acme", "out", ""));
    ftp.put("out/a.csv", b"id,status\n1,new\n");
    let locked = ftp.put("out/locked.csv", b"id,status\n2,new\n");
    std::process::Command::new("chown")
        .arg("root")
        .arg(&locked)
        .status()
        .unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o600)).unwrap();
    s.ferry_ok(&["run"], 5);
    assert_eq!(
        s.query("SELECT id FROM orders"),
        vec![vec![Some("1".to_string())]]
    );
    assert_eq!(
        s.count("SELECT count(*) FROM files WHERE remote_path = 'locked.csv'"),
        0
    );
    // Readable again: the next pull takes it.
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o644)).unwrap();
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 2);
}

/// A name with a line break in it splits its `LIST` line in two. Regression: the line that was
/// not a file was dropped without a note. Now it is reported, and nothing of that file loads
/// under a name cut at the break.
#[test]
fn a_listing_line_ferry_cannot_read_is_reported_not_dropped() {
    let ftp = Vsftpd::start();
    let s = Spool::new();
    configure(&s, &ftp.source("acme", "out", ""));
    ftp.put("out/ok.csv", b"id,status\n1,new\n");
    ftp.put("out/line\nbreak.csv", b"id,status\n2,new\n");
    let (code, report) = json_any(&s, &["run", "--dry-run", "--json"]);
    assert_eq!(code, Some(0), "{report}");
    let rules: Vec<String> = waiting_rules(&report).into_iter().map(|(_, r)| r).collect();
    assert!(rules.iter().any(|r| r == "remote.not_fetched"), "{report}");
    assert_ne!(s.ferry(&["run"]).status.code(), Some(0));
    assert_eq!(
        s.query("SELECT id FROM orders"),
        vec![vec![Some("1".to_string())]]
    );
}
