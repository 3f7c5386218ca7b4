//! Trust at the edges, operations: config mistakes, exit codes, and reports that tell the whole
//! story, the same way in every command. Named after what once broke.

use crate::harness::*;
use std::fs;
use std::process::Command;

/// A spool whose `ferry.toml` says `toml`; the exit code and stderr of `ferry run`.
fn run_with_config(toml: &str) -> (Option<i32>, String) {
    let s = Spool::new();
    fs::write(s.root.join("ferry.toml"), toml).unwrap();
    let out = s.ferry(&["run"]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_values_out_of_range_are_refused_with_their_key() {
    for (toml, key) in [
        ("workers = 100000\n", "workers"),
        ("max_attempts = 0\n", "max_attempts"),
        ("max_attempts = 1000000\n", "max_attempts"),
        ("[watch]\nrescan = \"1ms\"\n", "watch.rescan"),
        ("[ready]\nsettle = \"3d\"\n", "ready.settle"),
        (
            "[[dataset]]\nname = \"a\"\nmax_line_bytes = \"2GiB\"\n",
            "max_line_bytes",
        ),
        ("[[dataset]]\nname = \"a\"\nquotes = \"sloppy\"\n", "quotes"),
    ] {
        let (code, err) = run_with_config(toml);
        assert_eq!(code, Some(2), "{toml}: {err}");
        assert!(err.contains(key), "{toml}: {err}");
    }
    // A folder (or anything but a file) where the config should be is an error, not skipped.
    let s = Spool::new();
    fs::create_dir(s.root.join("ferry.toml")).unwrap();
    s.ferry_ok(&["run"], 2);
}

#[test]
fn declared_datasets_are_never_bypassed_silently() {
    let s = Spool::new();
    fs::write(
        s.root.join("ferry.toml"),
        "strict_datasets = true\n\n\
         [[dataset]]\nname = \"csv\"\nmatch = \"**/*.csv\"\n\n\
         [[dataset]]\nname = \"orders\"\nmatch = \"orders/*.csv\"\n\n\
         [[dataset]]\nname = \"regex\"\nmatch = \"^invoices_.*\\\\.json$\"\n",
    )
    .unwrap();
    let check = s.json(&["config", "check", "--json"]);
    let warnings: Vec<String> = check["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(warnings
        .iter()
        .any(|w| w.contains("\"orders\" can never take a file")));
    assert!(warnings
        .iter()
        .any(|w| w.contains("\"regex\"") && w.contains("regular expression")));
    assert_eq!(check["strict_datasets"], true);

    s.drop_file("orders/a.csv", b"id\n1\n");
    s.drop_file("invoices_1.json", b"[{\"id\":1}]");
    s.drop_file("misc/b.json", b"[{\"id\":2}]");
    s.ferry_ok(&["run"], 0);
    let files = s.files_by_path();
    assert_eq!(files.len(), 1);
    assert_eq!(files["orders/a.csv"]["dataset"], "csv");
    // The others wait, with the reason, where they were dropped.
    assert!(s.incoming().join("invoices_1.json").exists());
    assert!(s.incoming().join("misc/b.json").exists());
    let status = s.json(&["status", "--json"]);
    let waiting = waiting_rules(&status);
    assert!(
        waiting.contains(&("invoices_1.json".into(), "no_dataset".into())),
        "{waiting:?}"
    );
    assert!(
        waiting.contains(&("misc/b.json".into(), "no_dataset".into())),
        "{waiting:?}"
    );
}

#[test]
fn store_limits_are_content_errors_with_their_own_kind() {
    let s = Spool::new();
    let header: Vec<String> = (0..2100).map(|i| format!("c{i}")).collect();
    let row: Vec<String> = (0..2100).map(|i| i.to_string()).collect();
    s.drop_file(
        "wide/a.csv",
        format!("{}\n{}\n", header.join(","), row.join(",")).as_bytes(),
    );
    let obj: Vec<String> = (0..2100).map(|i| format!("\"k{i}\":{i}")).collect();
    s.drop_file(
        "widejson/a.json",
        format!("[{{{}}}]", obj.join(",")).as_bytes(),
    );
    // A table that grows past the limit file by file.
    let h1: Vec<String> = (0..1990).map(|i| format!("c{i}")).collect();
    s.drop_file(
        "grow/1.csv",
        format!("{}\n{}\n", h1.join(","), vec!["x"; 1990].join(",")).as_bytes(),
    );
    s.ferry_ok(&["run"], 3);
    let h2: Vec<String> = (0..2010).map(|i| format!("c{i}")).collect();
    s.drop_file(
        "grow/2.csv",
        format!("{}\n{}\n", h2.join(","), vec!["y"; 2010].join(",")).as_bytes(),
    );
    s.ferry_ok(&["run"], 3);
    let files = s.files_by_path();
    for p in ["wide/a.csv", "widejson/a.json", "grow/2.csv"] {
        assert_eq!(files[p]["error_kind"], "schema.too_many_columns", "{p}");
    }
    assert_eq!(files["grow/1.csv"]["state"], "ingested");
    assert_eq!(s.columns("grow").len(), 1990 + 3, "the table is as it was");
}

#[test]
fn records_set_aside_or_skipped_show_in_every_report() {
    let s = Spool::new();
    fs::write(
        s.root.join("ferry.toml"),
        "[[dataset]]\nname = \"v\"\nkey = [\"id\"]\nmax_bad_records = 10\n\
         columns = [{ name = \"id\", type = \"int\" }, { name = \"x\" }]\n",
    )
    .unwrap();
    s.drop_file("v/a.csv", b"id,x\n1,a\n2,b\nnope,c\n1,dup\n,empty\n");
    let (code, report) = json_any(&s, &["run", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(report["records"], 2);
    assert_eq!(report["rejected_records"], 2);
    assert_eq!(report["duplicate_records"], 1);
    assert_eq!(report["datasets"]["v"]["rejected"], 2);
    assert_eq!(report["datasets"]["v"]["duplicate_records"], 1);
    assert_eq!(report["losses"][0]["path"], "v/a.csv");
    let status = s.json(&["status", "--json"]);
    assert_eq!(status["rejected_records"], 2);
    assert_eq!(status["duplicate_records"], 1);
    assert_eq!(status["datasets"][0]["rejected_records"], 2);
    let id = s.files_by_path()["v/a.csv"]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let shown = s.json(&["quarantine", "show", &id, "--json"]);
    assert_eq!(shown["file"]["rejected"], 2);
    assert_eq!(shown["file"]["duplicate_records"], 1);
    let lines: Vec<i64> = shown["rejects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, [4, 6]);
}

#[test]
fn an_export_folder_is_one_target_however_it_is_written() {
    let s = Spool::new();
    s.drop_file("orders/a.csv", b"id\n1\n2\n");
    s.ferry_ok(&["run"], 0);
    let out = s.scratch("work");
    let dir = out.join("x");
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&dir, out.join("link")).unwrap();
    let export = |to: &str| {
        let o = s
            .cmd()
            .current_dir(&out)
            .args(["export", "orders", "--to", to, "--json"])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    assert_eq!(export("./x/../x")["rows"], 2);
    assert_eq!(export(dir.to_str().unwrap())["rows"], 0);
    assert_eq!(export("link")["rows"], 0);
    let targets = s.json(&["export", "--list", "--json"]);
    assert_eq!(targets.as_array().unwrap().len(), 1);
    // A second name for the same folder would export the same records twice there: refused.
    let o = s
        .cmd()
        .args([
            "export",
            "orders",
            "--to",
            dir.to_str().unwrap(),
            "--target",
            "other",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let batches = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".csv"))
        .count();
    assert_eq!(batches, 1);
}

#[test]
fn errors_say_the_whole_chain() {
    let s = Spool::new();
    s.drop_file("orders/a.csv", b"id\n1\n");
    s.ferry_ok(&["run"], 0);
    let out = s.ferry_ok(&["export", "nosuch"], 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("looking up the dataset") && err.contains("\"nosuch\""),
        "{err}"
    );
    assert!(
        err.contains("orders"),
        "names the datasets there are: {err}"
    );
}

#[test]
fn a_mistyped_root_is_refused_not_created() {
    let s = Spool::new();
    let nope = s.scratch("elsewhere").join("ferry-dta");
    let at = |args: &[&str]| {
        Command::new(FERRY)
            .arg("--root")
            .arg(&nope)
            .args(args)
            .env_remove("FERRY_ROOT")
            .env_remove("FERRY_CONFIG")
            .output()
            .unwrap()
    };
    for args in [
        &["run"][..],
        &["watch"],
        &["status"],
        &["files"],
        &["quarantine", "list"],
        &["export", "x"],
    ] {
        let out = at(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(nope.to_str().unwrap()),
            "{args:?} names the path: {err}"
        );
        assert!(!nope.exists(), "{args:?} created it");
    }
    // Asked for: created.
    assert_eq!(at(&["run", "--init"]).status.code(), Some(0));
    assert!(nope.join("incoming").is_dir());
    assert_eq!(at(&["status"]).status.code(), Some(0));
    // The default root is created where it is expected (the README's first command).
    let cwd = s.scratch("fresh-checkout");
    let out = Command::new(FERRY)
        .current_dir(&cwd)
        .args(["run"])
        .env_remove("FERRY_ROOT")
        .env_remove("FERRY_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(cwd.join("ferry-data/incoming").is_dir());
}

#[test]
fn counts_agree_across_commands_after_a_retry() {
    let s = Spool::new();
    fs::write(
        s.root.join("ferry.toml"),
        "[[dataset]]\nname = \"p\"\ncolumns = [{ name = \"d\", type = \"date\" }]\n",
    )
    .unwrap();
    s.drop_file("p/a.csv", b"d\n01.02.2026\n");
    s.drop_file("p/b.csv", b"d\n2026-02-02\n");
    s.ferry_ok(&["run"], 3);
    fs::write(
        s.root.join("ferry.toml"),
        "[[dataset]]\nname = \"p\"\n\
         columns = [{ name = \"d\", type = \"date\", formats = [\"%Y-%m-%d\", \"%d.%m.%Y\"] }]\n",
    )
    .unwrap();
    s.ferry_ok(&["quarantine", "retry", "--all"], 0);
    let status = s.json(&["status", "--json"]);
    assert_eq!(status["files"]["ingested"], 2);
    assert_eq!(status["files"]["quarantined"], 0);
    assert_eq!(status["quarantined"], 0);
    assert_eq!(status["datasets"][0]["quarantined"], 0);
    assert_eq!(status["datasets"][0]["files"], 2);
    assert_eq!(
        s.json(&["quarantine", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // The ledger keeps the history: three rows, two files.
    assert_eq!(s.files().len(), 3);
}
