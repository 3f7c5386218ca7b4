//! Living with ferry in production: the conveniences and the housekeeping a long-running
//! installation needs.

use crate::harness::*;
use std::fs;
use std::time::Duration;

#[test]
fn durations_without_a_unit_are_refused_not_guessed() {
    let s = Spool::new();
    // `--poll 5`: five seconds or five milliseconds? Refused before anything starts.
    let out = s.ferry(&["watch", "--poll", "5"]);
    assert_eq!(out.status.code(), Some(2));
    s.ferry_ok(&["config", "check"], 0);
    fs::write(s.root.join("ferry.toml"), "[ready]\nsettle = \"5\"\n").unwrap();
    s.ferry_ok(&["config", "check"], 2);
    fs::write(s.root.join("ferry.toml"), "[ready]\nsettle = \"5s\"\n").unwrap();
    let v = s.json(&["config", "check", "--json"]);
    assert_eq!(v["settle_ms"], 5000);
}

#[test]
fn config_check_takes_the_file_to_check_as_an_argument() {
    let s = Spool::new();
    let other = s.scratch("elsewhere").join("partners.toml");
    fs::write(&other, "[[dataset]]\nname = \"orders\"\n").unwrap();
    let path = other.to_str().unwrap();
    let v = s.json(&["config", "check", path, "--json"]);
    assert_eq!(v["file"], path);
    assert_eq!(v["datasets"][0]["name"], "orders");
    // A broken file named this way is reported as broken.
    fs::write(&other, "[[dataset]]\nnmae = \"orders\"\n").unwrap();
    s.ferry_ok(&["config", "check", path], 2);
    // Two different files named at once: which one was meant is not guessed.
    let second = s.scratch("elsewhere").join("second.toml");
    fs::write(&second, "").unwrap();
    s.ferry_ok(
        &[
            "--config",
            second.to_str().unwrap(),
            "config",
            "check",
            path,
        ],
        2,
    );
}

both_stores! {
    fn a_crash_looping_daemon_leaves_no_owner_bookkeeping_behind() {
        let s = Spool::new();
        fs::write(s.root.join("ferry.toml"), "[store]\nlease = \"2s\"\n").unwrap();
        s.ferry_ok(&["run"], 0);
        for _ in 0..3 {
            let mut d = start_watch(&s, &[]);
            std::thread::sleep(Duration::from_millis(700));
            sigkill(&mut d);
        }
        let owners = s.root.join("processing/.owners");
        let dead = |s: &Spool| {
            if s.is_postgres() {
                s.count("SELECT count(*) FROM ferry_owners")
            } else {
                fs::read_dir(&owners).map_or(0, |d| d.count() as i64)
            }
        };
        assert_eq!(dead(&s), 3, "each killed daemon left its bookkeeping");
        if s.is_postgres() {
            // Swept once a lease has passed since the leases lapsed.
            std::thread::sleep(Duration::from_secs(9));
        } else {
            for e in fs::read_dir(&owners).unwrap() {
                backdate(&e.unwrap().path());
            }
        }
        s.ferry_ok(&["run"], 0);
        assert_eq!(dead(&s), 0, "the dead owners are swept at the next start");
    }
}

#[test]
fn run_takes_single_files_named_on_the_command_line() {
    let s = Spool::new();
    let a = s.drop_file("orders/a.csv", b"id\n1\n2\n");
    s.drop_file("orders/b.csv", b"id\n3\n");
    s.ferry_ok(&["run", a.to_str().unwrap()], 0);
    assert_eq!(s.count("SELECT count(*) FROM orders"), 2);
    assert!(
        s.incoming().join("orders/b.csv").exists(),
        "only the named file is taken"
    );
    assert!(!a.exists());
    // Outside the inbox, read in place: the folder a file is in names its dataset.
    let elsewhere = s.scratch("exports").join("invoices");
    fs::create_dir_all(&elsewhere).unwrap();
    let (x, y) = (elsewhere.join("x.csv"), elsewhere.join("y.csv"));
    fs::write(&x, "n\n10\n").unwrap();
    fs::write(&y, "n\n20\n").unwrap();
    backdate(&x);
    backdate(&y);
    s.ferry_ok(
        &["run", "--keep", x.to_str().unwrap(), y.to_str().unwrap()],
        0,
    );
    assert_eq!(s.count("SELECT count(*) FROM invoices"), 2);
    assert!(x.exists() && y.exists(), "--keep leaves them in place");
    // What cannot be meant is refused, and nothing is taken.
    let other = s.scratch("exports").join("other");
    fs::create_dir_all(&other).unwrap();
    let z = other.join("z.csv");
    fs::write(&z, "n\n30\n").unwrap();
    let b = s.incoming().join("orders/b.csv");
    let missing = other.join("missing.csv");
    for args in [
        vec![x.to_str().unwrap(), b.to_str().unwrap()],
        vec![elsewhere.to_str().unwrap(), z.to_str().unwrap()],
        vec![missing.to_str().unwrap()],
    ] {
        let mut all = vec!["run", "--keep"];
        all.extend(args);
        s.ferry_ok(&all, 2);
    }
    let archived = tree(&s.root.join("archive"));
    let archived = archived.keys().next().unwrap().clone();
    s.ferry_ok(
        &[
            "run",
            s.root.join("archive").join(archived).to_str().unwrap(),
        ],
        2,
    );
    assert_eq!(s.count("SELECT count(*) FROM files"), 3);
}

#[test]
fn quarantine_retry_of_a_file_it_cannot_send_again_says_so_in_its_exit_code() {
    let s = Spool::new();
    let keep = s.scratch("keep");
    mkfifo(&keep.join("pipe.csv"));
    s.ferry_ok(&["run", "--keep", keep.to_str().unwrap()], 3);
    let f = &s.files_by_path()["pipe.csv"];
    assert_eq!(f["state"], "quarantined");
    let id = f["id"].to_string();
    // Nothing of it was kept (a FIFO is never copied): retrying it cannot happen, and the exit
    // code says so rather than 0.
    let out = s.ferry_ok(&["quarantine", "retry", &id, "--json"], 5);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["left"], 1, "{v}");
    assert_eq!(s.count("SELECT count(*) FROM files"), 1);
}

#[test]
fn manual_pages_and_completions_are_printed_for_every_subcommand() {
    let s = Spool::new();
    let top = String::from_utf8(s.ferry_ok(&["man"], 0).stdout).unwrap();
    assert!(top.contains(".TH ferry 1"), "{top}");
    for sub in [
        "run",
        "watch",
        "export",
        "status",
        "files",
        "quarantine",
        "config",
    ] {
        assert!(top.contains(&format!("ferry\\-{sub}(1)")), "{sub} listed");
        let page = String::from_utf8(s.ferry_ok(&["man", sub], 0).stdout).unwrap();
        assert!(page.contains(&format!(".TH ferry-{sub} 1")), "{page}");
    }
    s.ferry_ok(&["man", "nope"], 2);
    let bash = String::from_utf8(s.ferry_ok(&["completions", "bash"], 0).stdout).unwrap();
    assert!(bash.contains("watch") && bash.contains("--store"));
}

#[test]
fn explain_tells_what_would_happen_to_a_file_without_loading_it() {
    let s = Spool::new();
    fs::write(
        s.root.join("ferry.toml"),
        "strict_datasets = true\n\n[[dataset]]\nname = \"orders\"\n\n\
         [[dataset]]\nname = \"typed\"\ncolumns = [{ name = \"n\", type = \"int\" }]\n",
    )
    .unwrap();
    let ready = s.drop_file("orders/a.csv", b"id,amount\n1,2.5\n");
    let temp = s.drop_file("orders/b.csv.tmp", b"id\n1\n");
    let typed = s.drop_file("typed/t.csv", b"n\n1\n");
    let stray = s.drop_file("misc/x.csv", b"a\n1\n");
    let broken = s.drop_file("orders/bad.csv", b"a,b\n1,\"2\n");
    let explain = |p: &std::path::Path| s.json(&["explain", p.to_str().unwrap(), "--json"]);

    let v = explain(&ready);
    assert_eq!(v["dataset"], "orders");
    assert!(v["held"].is_null(), "{v}");
    assert_eq!(v["table"], "orders");
    assert_eq!(v["table_exists"], false);
    assert_eq!(v["format"], "csv");
    assert_eq!(v["columns"][0]["name"], "id");
    assert_eq!(v["columns"][1]["name"], "amount");
    assert!(v["problem"].is_null());

    assert_eq!(explain(&temp)["held"]["rule"], "temp_name");
    let v = explain(&typed);
    assert_eq!(v["columns"][0]["type"], "int");
    let v = explain(&stray);
    assert!(v["dataset"].is_null());
    assert_eq!(v["held"]["rule"], "no_dataset");
    assert_eq!(
        explain(&broken)["problem"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("csv.unterminated_quote")
    );

    // Nothing was loaded, nothing moved, no store created.
    assert!(ready.exists() && temp.exists() && broken.exists());
    assert!(!s.root.join("ferry.db").exists());
    // Once the table exists, explain says so.
    s.ferry_ok(&["run"], 3);
    let moved = s.scratch("again").join("orders");
    fs::create_dir_all(&moved).unwrap();
    fs::write(moved.join("c.csv"), "id\n9\n").unwrap();
    let v = explain(&moved.join("c.csv"));
    assert_eq!(v["table_exists"], true);
}

both_stores! {
    fn run_dry_run_judges_every_file_and_changes_nothing() {
        let s = Spool::new();
        fs::write(
            s.root.join("ferry.toml"),
            "[[dataset]]\nname = \"orders\"\nmax_bad_records = 1\n\
             columns = [{ name = \"id\", type = \"int\" }, { name = \"v\", type = \"string\" }]\n",
        )
        .unwrap();
        s.drop_file("orders/a.csv", b"id,v\n1,a\n2,b\nx,c\n");
        s.drop_file("orders/copy.csv", b"id,v\n1,a\n2,b\nx,c\n");
        s.drop_file("orders/bad.csv", b"id,v\n3,\"open\n");
        let before = tree(&s.root);
        let out = s.ferry_ok(&["run", "--dry-run", "--json"], 3);
        assert_eq!(tree(&s.root), before, "a dry run changes nothing in the spool");
        assert_eq!(s.count_or_zero("SELECT count(*) FROM files"), 0, "nor in the store");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["dry_run"], true);
        let verdicts: std::collections::BTreeMap<String, serde_json::Value> = report["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["path"].as_str().unwrap().to_string(), v.clone()))
            .collect();
        assert_eq!(verdicts.len(), 3);
        let bad = &verdicts["orders/bad.csv"];
        assert_eq!(bad["outcome"], "quarantine");
        assert_eq!(bad["error_kind"], "csv.unterminated_quote");
        // Of the two copies one would load (2 records, 1 set aside) and one be its duplicate.
        let mut outcomes: Vec<_> = ["orders/a.csv", "orders/copy.csv"]
            .iter()
            .map(|p| verdicts[*p]["outcome"].as_str().unwrap())
            .collect();
        outcomes.sort();
        assert_eq!(outcomes, ["duplicate", "ingest"]);
        let loads = verdicts.values().find(|v| v["outcome"] == "ingest").unwrap();
        assert_eq!((loads["records"].as_u64(), loads["rejected_records"].as_u64()), (Some(2), Some(1)));

        // The real run does what the dry run said.
        s.ferry_ok(&["run"], 3);
        let rows = s.files_by_path();
        assert_eq!(rows["orders/bad.csv"]["state"], "quarantined");
        assert_eq!(s.count("SELECT count(*) FROM orders"), 2);
        let id = rows.values().find(|r| r["state"] == "ingested").unwrap()["id"].as_i64();

        // Sent again: a dry run names the file it duplicates.
        s.drop_file("orders/again.csv", b"id,v\n1,a\n2,b\nx,c\n");
        let again = s.json(&["run", "--dry-run", "--json"]);
        assert_eq!(again["verdicts"][0]["outcome"], "duplicate");
        assert_eq!(again["verdicts"][0]["duplicate_of"].as_i64(), id);
        assert!(s.incoming().join("orders/again.csv").exists());
    }
}

#[test]
fn small_things_an_operator_reaches_for() {
    let s = Spool::new();
    s.drop_file(
        "a_dataset_with_a_rather_long_name_indeed/x.csv",
        b"id\n1\n2\n",
    );
    s.drop_file("b/y.csv", b"id\n3\n");
    s.drop_file("b/bad.csv", b"id\n\"open\n");
    // `run --json` lists each file's outcome.
    let (code, run) = json_any(&s, &["run", "--json"]);
    assert_eq!(code, Some(3));
    let files = run["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{run}");
    let by_path = |p: &str| files.iter().find(|f| f["path"] == p).unwrap().clone();
    assert_eq!(by_path("b/y.csv")["outcome"], "ingested");
    assert_eq!(by_path("b/y.csv")["records"], 1);
    assert_eq!(by_path("b/bad.csv")["outcome"], "quarantined");
    assert_eq!(by_path("b/bad.csv")["error_kind"], "csv.unterminated_quote");

    // `files` says when each finished and takes --since.
    assert_eq!(
        s.json(&["files", "--since", "1h", "--json"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(s
        .json(&["files", "--since", "2999-01-01", "--json"])
        .as_array()
        .unwrap()
        .is_empty());
    let table = String::from_utf8(s.ferry_ok(&["files"], 0).stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].contains("finished"), "{table}");
    // Columns stay aligned whatever the dataset names' lengths.
    let starts: Vec<usize> = lines[1..].iter().map(|l| l.rfind("  ").unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] == w[1]), "{table}");
    s.ferry_ok(&["files", "--since", "yesterday-ish"], 2);

    // `export --list` shows datasets never exported; `--all` exports every pending one.
    let list = s.json(&["export", "--list", "--json"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["dataset"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["a_dataset_with_a_rather_long_name_indeed", "b"],
        "{list}"
    );
    assert_eq!(list[0]["pending_records"], 2);
    let all = s.json(&["export", "--all", "--json"]);
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let again = s.json(&["export", "--all", "--json"]);
    assert!(again.as_array().unwrap().is_empty(), "{again}");
    let list = s.json(&["export", "--list", "--json"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t["pending_records"] == 0),
        "{list}"
    );

    // Exit codes in --help and the manual page; durations in one style.
    let help = String::from_utf8(s.ferry_ok(&["--help"], 0).stdout).unwrap();
    assert!(
        help.contains("Exit codes:") && help.contains("130"),
        "{help}"
    );
    let man = String::from_utf8(s.ferry_ok(&["man"], 0).stdout).unwrap();
    assert!(man.contains("Exit codes"), "the manual page lists them");
    let check = String::from_utf8(s.ferry_ok(&["config", "check"], 0).stdout).unwrap();
    assert!(
        check.contains("settle        1s") && check.contains("rescan every 30s"),
        "{check}"
    );
}
