//! Remote sources (R-remote) against a real OpenSSH server: files pulled over SFTP load once
//! with their remote origin in the ledger, `after` acts only after the commit, host keys are
//! verified, secrets never come from the config, remote names never leave the spool, and two
//! processes pulling one folder take each file once.

use crate::harness::*;
use crate::sshd::Sshd;
use std::fs;

const ORDERS: &str = "[[dataset]]\nname = \"orders\"\nmatch = \"acme/**\"\n\
                      columns = [{ name = \"id\", type = \"int\" }, { name = \"status\" }]\n";

/// A spool whose `orders` dataset takes `acme/**` (where the tests' sources land), plus `body`.
pub fn configure(s: &Spool, body: &str) {
    fs::write(s.root.join("ferry.toml"), format!("{ORDERS}{body}")).unwrap();
}

/// Ledger rows of pulled files: (path, state, remote source, remote path), by path (parallel
/// downloads commit in any order).
fn pulled(s: &Spool) -> Vec<Vec<Option<String>>> {
    s.query(
        "SELECT path, state, remote_source, remote_path FROM files \
         WHERE remote_source IS NOT NULL ORDER BY path",
    )
}

fn cell(v: &str) -> Option<String> {
    Some(v.to_string())
}

both_stores! {
    fn files_pulled_over_sftp_load_once_with_their_remote_origin() {
        let sshd = Sshd::start();
        let s = Spool::new();
        configure(&s, &sshd.source("acme", ""));
        sshd.put("a.csv", b"id,status\n1,new\n2,new\n");
        sshd.put("2026/12/b.csv", b"id,status\n3,paid\n");
        // Not fetched: a temp name and a hidden file.
        sshd.put("c.csv.part", b"id,status\n9,partial\n");
        sshd.put(".hidden.csv", b"id,status\n9,hidden\n");
        // Waiting, with the rule, as local files would: never skipped without a note.
        let (code, report) = json_any(&s, &["run", "--json"]);
        assert_eq!(code, Some(0));
        let mut rules = waiting_rules(&report);
        rules.sort();
        assert_eq!(
            rules,
            vec![
                ("acme/.hidden.csv".to_string(), "hidden".to_string()),
                ("acme/c.csv.part".to_string(), "temp_name".to_string()),
            ]
        );
        assert_eq!(s.count("SELECT count(*) FROM orders"), 3);
        assert_eq!(
            pulled(&s),
            vec![
                vec![cell("acme/2026/12/b.csv"), cell("ingested"), cell("acme"), cell("2026/12/b.csv")],
                vec![cell("acme/a.csv"), cell("ingested"), cell("acme"), cell("a.csv")],
            ]
        );
        // `ferry files` shows where each came from.
        let files = s.files();
        let a = files.iter().find(|f| f["path"] == "acme/a.csv").unwrap();
        assert_eq!(a["remote_source"], "acme");
        assert_eq!(a["remote_path"], "a.csv");
        assert!(a["remote_version"].as_str().unwrap().starts_with("22:"), "{a}");
        // Kept on the server (after = "keep"), and archived locally with its folders.
        assert!(sshd.remote.join("a.csv").exists());
        assert!(!s.leftover_inputs().iter().any(|p| p.contains("b.csv")));
        // Pulled again: nothing is downloaded or recorded again.
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM files"), 2);
        // A new version of a path (touched: same bytes) is downloaded and judged by content:
        // a duplicate. New bytes under the same name load.
        let a = sshd.remote.join("a.csv");
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
        fs::File::options().write(true).open(&a).unwrap().set_modified(t).unwrap();
        sshd.put("2026/12/b.csv", b"id,status\n3,paid\n4,new\n");
        s.ferry_ok(&["run"], 0);
        let states: Vec<(String, String)> = s
            .query("SELECT remote_path, state FROM files WHERE remote_source = 'acme' ORDER BY id")
            .into_iter()
            .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
            .collect();
        assert_eq!(states.len(), 4, "{states:?}");
        assert!(states.contains(&("a.csv".into(), "duplicate".into())), "{states:?}");
        assert_eq!(states.iter().filter(|(_, st)| st == "ingested").count(), 3);
        assert_eq!(s.count("SELECT count(*) FROM orders"), 5);
        // Each remote version is claimed once, and finished; what the store keeps is bounded by
        // what the server holds (the replaced versions are forgotten).
        assert_eq!(s.count("SELECT count(*) FROM ferry_remote WHERE state = 'finished'"), 2);
        s.ferry_ok(&["run"], 0);
        assert_eq!(s.count("SELECT count(*) FROM files"), 4);
    }
}

#[test]
fn after_delete_and_move_act_only_on_committed_files() {
    let sshd = Sshd::start();
    let s = Spool::new();
    configure(&s, &sshd.source("acme", "after = \"delete\""));
    sshd.put("good.csv", b"id,status\n1,new\n");
    // Quarantined (not an int): committed with its reason, so it leaves the server too; its
    // copy is in quarantine/.
    sshd.put("bad.csv", b"id,status\nx,new\n");
    s.ferry_ok(&["run"], 3);
    assert!(!sshd.remote.join("good.csv").exists());
    assert!(!sshd.remote.join("bad.csv").exists());
    assert_eq!(
        s.count("SELECT count(*) FROM files WHERE state = 'quarantined'"),
        1
    );
    assert!(tree(&s.root.join("quarantine"))
        .keys()
        .any(|k| k.ends_with("bad.csv")));

    let s = Spool::new();
    configure(&s, &sshd.source("acme", "after = \"move:done\""));
    sshd.put("x/one.csv", b"id,status\n7,new\n");
    s.ferry_ok(&["run"], 0);
    assert!(!sshd.remote.join("x/one.csv").exists());
    assert_eq!(
        fs::read(sshd.remote.join("done/x/one.csv")).unwrap(),
        b"id,status\n7,new\n"
    );
    // The moved file is not pulled again from done/ — it was loaded under x/one.csv; had it
    // been, content identity would make it a duplicate, never a second load.
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 1);
    // A new file of the same name is moved beside the first, never over it.
    sshd.put("x/one.csv", b"id,status\n8,new\n");
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 2);
    // Files moved into a folder inside the source's are not listed again (they were, and each
    // run moved them one `done/` deeper).
    let done: Vec<String> = tree(&sshd.remote.join("done"))
        .into_keys()
        .filter(|k| k.ends_with(".csv") || k.contains(".csv."))
        .collect();
    assert_eq!(
        done.len(),
        2,
        "{done:?} {:?} {}",
        tree(&sshd.remote),
        s.json(&["status", "--json"])["sources"]
    );
    assert_eq!(
        fs::read(sshd.remote.join("done/x/one.csv")).unwrap(),
        b"id,status\n7,new\n"
    );
}

#[test]
fn an_unknown_or_changed_host_key_is_refused_and_nothing_is_downloaded() {
    let sshd = Sshd::start();
    sshd.put("a.csv", b"id,status\n1,new\n");
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let empty = sshd.dir.join("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    let other = sshd.dir.join("other_known_hosts");
    fs::write(
        &other,
        format!(
            "[127.0.0.1]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n",
            sshd.port
        ),
    )
    .unwrap();
    let kh_line = format!("known_hosts = \"{}\"\n", sshd.known_hosts.display());
    let block = sshd.source("acme", "");
    for check in [
        format!("host_key = \"{wrong}\"\n"),
        format!("known_hosts = \"{}\"\n", empty.display()),
        format!("known_hosts = \"{}\"\n", other.display()),
    ] {
        let s = Spool::new();
        configure(&s, &block.replace(&kh_line, &check));
        s.ferry_ok(&["run"], 2);
        s.ferry_ok(&["config", "check"], 2);
        assert_eq!(s.count_or_zero("SELECT count(*) FROM files"), 0, "{check}");
        assert!(tree(&s.incoming()).is_empty(), "{check}");
        assert!(sshd.remote.join("a.csv").exists());
    }
    // The right fingerprint works.
    let s = Spool::new();
    configure(
        &s,
        &block.replace(&kh_line, &format!("host_key = \"{}\"\n", sshd.fingerprint)),
    );
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 1);
}

#[test]
fn secrets_written_into_the_config_are_refused() {
    let s = Spool::new();
    for (block, _) in [
        ("url = \"sftp://u@h/x\"\npassword = \"hunter2\"", "password"),
        (
            "url = \"sftp://u:hunter2@h/x\"\npassword_env = \"P\"",
            "url",
        ),
        (
            "url = \"sftp://u@h/x\"\nidentity_file = \"/k\"\npassphrase = \"p\"",
            "passphrase",
        ),
    ] {
        fs::write(
            s.root.join("ferry.toml"),
            format!("[[source]]\nname = \"acme\"\n{block}\n"),
        )
        .unwrap();
        let out = s.ferry(&["config", "check"]);
        assert_eq!(out.status.code(), Some(2), "{block}");
        // The secret is never echoed back.
        let all = [out.stdout, out.stderr].concat();
        assert!(
            !String::from_utf8_lossy(&all).contains("hunter2"),
            "{block}"
        );
    }
}

#[test]
fn remote_names_that_cannot_be_local_names_are_reported_not_fetched() {
    let sshd = Sshd::start();
    let s = Spool::new();
    configure(&s, &sshd.source("acme", ""));
    sshd.put("ok.csv", b"id,status\n1,new\n");
    // A backslash and a newline are legal in a remote name; neither becomes a local path.
    sshd.put("a\\..\\b.csv", b"id,status\n2,new\n");
    sshd.put("line\nbreak.csv", b"id,status\n3,new\n");
    // A link on the server is never followed.
    std::os::unix::fs::symlink("/etc/passwd", sshd.remote.join("passwd.csv")).unwrap();
    s.ferry_ok(&["run"], 5);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 1);
    let local = tree(&s.root);
    assert!(
        !local
            .keys()
            .any(|k| k.contains("passwd") || k.contains('\\') || k.contains('\n')),
        "{local:?}"
    );
    assert!(sshd.remote.join("a\\..\\b.csv").exists());
}

#[test]
fn two_hosts_pulling_one_folder_take_each_file_once() {
    on(Backend::Postgres, || {
        let sshd = Sshd::start();
        for i in 0..60 {
            sshd.put(
                &format!("f{i:02}.csv"),
                format!("id,status\n{i},new\n").as_bytes(),
            );
        }
        let a = Spool::new();
        let b = a.another_host();
        for s in [&a, &b] {
            configure(s, &sshd.source("acme", "connections = 3"));
        }
        let (ca, cb) = (
            a.cmd().args(["run"]).spawn().unwrap(),
            b.cmd().args(["run"]).spawn().unwrap(),
        );
        for mut c in [ca, cb] {
            assert_eq!(c.wait().unwrap().code(), Some(0));
        }
        assert_eq!(a.count("SELECT count(*) FROM orders"), 60);
        assert_eq!(a.count("SELECT count(DISTINCT id) FROM orders"), 60);
        assert_eq!(
            a.count("SELECT count(*) FROM files WHERE remote_source = 'acme'"),
            60,
            "each remote file downloaded and recorded once"
        );
        assert_eq!(
            a.count("SELECT count(*) FROM ferry_remote WHERE state = 'finished'"),
            60
        );
    });
}

/// `ferry watch` polls each source on its own schedule; a source that is down backs off on its
/// own while the other source and the local inbox go on, and `/metrics` says which is which.
/// Files disposed of (`after = "delete"`) only once their commit is seen.
#[test]
fn watch_polls_each_source_and_one_that_is_down_holds_up_nothing() {
    let sshd = Sshd::start();
    let s = Spool::new();
    let down = free_port();
    let dead = format!(
        "[[source]]\nname = \"down\"\nurl = \"sftp://nobody@127.0.0.1:{down}/x\"\n\
         identity_file = \"{}\"\nknown_hosts = \"{}\"\ninto = \"acme/down\"\npoll = \"200ms\"\n",
        sshd.key.display(),
        sshd.known_hosts.display()
    );
    configure(
        &s,
        &format!(
            "{}{dead}",
            sshd.source("acme", "poll = \"200ms\"\nafter = \"delete\"")
        ),
    );
    let port = free_port();
    let mut child = start_watch(&s, &["--metrics", &format!("127.0.0.1:{port}")]);
    sshd.put("one.csv", b"id,status\n1,new\n");
    s.drop_file("acme/local.csv", b"id,status\n2,new\n");
    wait_for_files(&s, 2);
    sshd.put("later/two.csv", b"id,status\n3,new\n");
    wait_for_files(&s, 3);
    // Deleted on the server once loaded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sshd.remote.join("later/two.csv").exists() || sshd.remote.join("one.csv").exists() {
        assert!(std::time::Instant::now() < deadline, "not disposed of");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let metrics = http_get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("ferry_source_up{source=\"acme\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_source_up{source=\"down\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_source_files_fetched_total{source=\"acme\"} 2"),
        "{metrics}"
    );
    let page = http_get(port, "/").unwrap();
    assert!(
        page.contains("id=\"sources\"") && page.contains("backing off"),
        "{page}"
    );
    assert_eq!(sigterm(&mut child), Some(0));
    let status = s.json(&["status", "--json"]);
    let acme = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "acme")
        .unwrap()
        .clone();
    // Deleted on the server, so forgotten by the store; nothing in flight or awaiting disposal.
    assert_eq!(acme["in_flight"].as_u64(), Some(0), "{acme}");
    assert_eq!(acme["awaiting_disposal"].as_u64(), Some(0), "{acme}");
    assert_eq!(s.count("SELECT count(*) FROM orders"), 3);
    assert_eq!(
        s.count("SELECT count(*) FROM files WHERE remote_source = 'acme' AND state = 'ingested'"),
        2
    );
}

/// `ferry run` killed (-9) at different points of a pull, then run again: the same records as
/// one uninterrupted run, each remote file loaded once.
#[test]
fn a_pull_killed_at_any_point_and_run_again_loads_every_file_once() {
    let sshd = Sshd::start();
    killed_pulls_load_every_file_once(
        |path, bytes| {
            sshd.put(path, bytes);
        },
        |extra| sshd.source("acme", extra),
    );
}

/// 30 files of 4,000 rows on a source (`put`, `source` with extra settings); `run` SIGKILLed
/// after 2, 8 and 15 files were recorded, with 3, 1 and 2 connections; a second run loads
/// every record once and leaves nothing half-downloaded.
pub fn killed_pulls_load_every_file_once(
    put: impl Fn(&str, &[u8]),
    source: impl Fn(&str) -> String,
) {
    let files = 30;
    let rows = 4000;
    for f in 0..files {
        let mut body = String::from("id,status\n");
        for r in 0..rows {
            body.push_str(&format!("{},s{}\n", f * rows + r, r % 7));
        }
        put(&format!("d{}/f{f:02}.csv", f % 3), body.as_bytes());
    }
    for (k, after) in [(2, "3"), (8, "1"), (15, "2")] {
        let s = Spool::new();
        configure(&s, &source(&format!("connections = {after}")));
        let mut child = s.cmd().args(["-q", "run"]).spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let n = s.count_or_zero("SELECT count(*) FROM files");
            if n >= k || child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no progress");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        sigkill(&mut child);
        s.ferry_ok(&["run"], 0);
        assert_eq!(
            s.count("SELECT count(*) FROM orders"),
            (files * rows) as i64,
            "killed after {k} files"
        );
        assert_eq!(
            s.count("SELECT count(DISTINCT id) FROM orders"),
            (files * rows) as i64
        );
        assert_eq!(
            s.count(
                "SELECT count(DISTINCT remote_path) FROM files WHERE state = 'ingested' \
                 AND remote_source = 'acme'"
            ) + s.count(
                "SELECT count(*) FROM files WHERE state = 'ingested' AND remote_source IS NULL"
            ),
            files as i64
        );
        assert_eq!(
            s.count("SELECT count(*) FROM files WHERE state = 'ingested'"),
            files as i64
        );
        // Nothing half-downloaded is left behind.
        assert!(
            tree(&s.root.join("processing"))
                .keys()
                .all(|k| k.starts_with(".owners")),
            "{:?}",
            tree(&s.root.join("processing"))
        );
    }
}

/// A remote file still being written when listed is not fetched half-written: it is judged
/// again once it has settled, and what loads is the whole file.
#[test]
fn a_remote_file_growing_while_listed_loads_only_once_it_is_whole() {
    let sshd = Sshd::start();
    let s = Spool::new();
    configure(
        &s,
        &sshd
            .source("acme", "")
            .replace("settle = \"0s\"", "settle = \"1s\""),
    );
    let path = sshd.put("growing.csv", b"id,status\n1,new\n");
    let child = s.cmd().args(["-q", "run"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, b"2,new\n3,new\n").unwrap();
    drop(f);
    crate::harness::backdate(&path);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    s.ferry_ok(&["run"], 0);
    // Whatever the first run saw, the rows stored are the whole file's, once.
    assert_eq!(s.count("SELECT count(*) FROM orders"), 3);
    assert_eq!(
        s.count("SELECT count(*) FROM files WHERE state = 'ingested'"),
        1
    );
}

/// `run --dry-run` downloads and records nothing; it lists what a pull would fetch, judged by
/// the same code (`pull::survey`).
#[test]
fn a_dry_run_lists_what_a_pull_would_fetch_and_downloads_nothing() {
    let sshd = Sshd::start();
    let s = Spool::new();
    configure(&s, &sshd.source("acme", ""));
    sshd.put("a.csv", b"id,status\n1,new\n");
    sshd.put("b.csv.tmp", b"id,status\n2,new\n");
    s.ferry_ok(&["run"], 0);
    sshd.put("c/d.csv", b"id,status\n3,new\n");
    let (code, report) = json_any(&s, &["run", "--dry-run", "--json"]);
    assert_eq!(code, Some(0), "{report}");
    let mut rules = waiting_rules(&report);
    rules.sort();
    assert_eq!(
        rules,
        vec![
            ("acme/b.csv.tmp".to_string(), "temp_name".to_string()),
            ("acme/c/d.csv".to_string(), "remote".to_string()),
        ]
    );
    assert_eq!(s.count("SELECT count(*) FROM files"), 1);
    assert!(!s.incoming().join("acme/c").exists());
}

/// `run --source NAME` pulls that source only (not the local inbox, not the other sources);
/// an unknown name is a usage error.
#[test]
fn run_source_pulls_only_the_source_named() {
    let sshd = Sshd::start();
    let s = Spool::new();
    // Another source on another folder of the same server.
    let elsewhere = sshd.dir.join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    let other = sshd.source("other", "into = \"acme/other\"").replace(
        &format!("{}\"", sshd.remote.display()),
        &format!("{}\"", elsewhere.display()),
    );
    configure(&s, &format!("{}{other}", sshd.source("acme", "")));
    sshd.put("a.csv", b"id,status\n1,new\n");
    fs::write(elsewhere.join("b.csv"), b"id,status\n2,new\n").unwrap();
    backdate(&elsewhere.join("b.csv"));
    s.drop_file("acme/local.csv", b"id,status\n3,new\n");
    s.ferry_ok(&["run", "--source", "acme"], 0);
    assert_eq!(
        s.query("SELECT path FROM files ORDER BY id"),
        vec![vec![Some("acme/a.csv".to_string())]]
    );
    s.ferry_ok(&["run", "--source", "nope"], 2);
    s.ferry_ok(&["run"], 0);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 3);
}

/// SIGTERM while `watch` downloads a big file: the download is cut within one read and the
/// daemon exits; nothing of the file is recorded, and nothing partial is left.
#[test]
fn a_stop_cuts_a_download_in_flight() {
    let sshd = Sshd::start();
    let s = Spool::new();
    configure(&s, &sshd.source("acme", "poll = \"200ms\""));
    // 4 GiB, sparse on the server: longer to download than `sigterm` waits (30 s).
    let big = sshd.remote.join("big.csv");
    fs::File::create(&big).unwrap().set_len(4 << 30).unwrap();
    backdate(&big);
    let mut child = start_watch(&s, &[]);
    let fetch = s.root.join("processing/.fetch");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while tree(&fetch).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let asked = std::time::Instant::now();
    assert_eq!(sigterm(&mut child), Some(0));
    // Cut, not finished: a whole download would take far longer, and would have left a claim.
    assert!(asked.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(s.count_or_zero("SELECT count(*) FROM files"), 0);
    assert!(tree(&fetch).is_empty(), "{:?}", tree(&fetch));
    let processing: Vec<String> = tree(&s.root.join("processing"))
        .into_keys()
        .filter(|k| !k.starts_with(".owners") && !k.starts_with(".fetch"))
        .collect();
    assert!(processing.is_empty(), "{processing:?}");
    assert!(!s.incoming().join("acme/big.csv").exists());
}

/// A big file is hashed while it downloads (the worker skips its own hash pass); the ledger's
/// SHA-256 is the content's, and the parse pass, which hashes again, agrees.
#[test]
fn a_big_pulled_file_is_recorded_with_its_content_hash() {
    let sshd = Sshd::start();
    let s = Spool::new();
    configure(&s, &sshd.source("acme", ""));
    let mut body = String::from("id,status\n");
    for i in 0..400_000 {
        body.push_str(&format!("{i},status-{}\n", i % 13));
    }
    assert!(body.len() > 4 << 20, "bigger than the read-at-once size");
    sshd.put("big.csv", body.as_bytes());
    s.ferry_ok(&["run"], 0);
    assert_eq!(
        s.query("SELECT sha256, state FROM files"),
        vec![vec![
            Some(sha256_hex(body.as_bytes())),
            Some("ingested".into())
        ]]
    );
    assert_eq!(s.count("SELECT count(*) FROM orders"), 400_000);
}
