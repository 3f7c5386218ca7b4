//! What an operator looks at: the status page at `/`, and the dashboard and alert rules
//! shipped in `config/`, checked against the metrics ferry really serves.

use crate::harness::*;
use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

/// The body of a GET, once the daemon answers it with 200.
fn page(port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(r) = http_get(port, path) {
            if r.starts_with("HTTP/1.0 200") {
                return r.split_once("\r\n\r\n").unwrap().1.to_string();
            }
        }
        assert!(Instant::now() < deadline, "no 200 on {path}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An element of the page: its tag, attributes and text (entities decoded).
#[derive(Debug)]
struct El {
    tag: String,
    attrs: Vec<(String, String)>,
    text: String,
}

impl El {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Every element of an HTML document, parsed.
fn elements(html: &str) -> Vec<El> {
    let dom = tl::parse(html, tl::ParserOptions::default()).expect("the page parses");
    let parser = dom.parser();
    dom.nodes()
        .iter()
        .filter_map(|n| n.as_tag())
        .map(|t| El {
            tag: t.name().as_utf8_str().to_string(),
            attrs: t
                .attributes()
                .iter()
                .map(|(k, v)| (k.to_string(), unescape(&v.unwrap_or_default())))
                .collect(),
            text: unescape(&t.inner_text(parser)),
        })
        .collect()
}

#[test]
fn the_status_page_shows_feeds_quarantine_waiting_and_the_daemon() {
    let s = Spool::new();
    fs::write(
        s.root.join("ferry.toml"),
        "[ready]\ndone_marker = \".ok\"\n",
    )
    .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    s.drop_file("orders/a.csv", b"id,v\n1,a\n2,b\n");
    s.drop_file("orders/a.csv.ok", b"");
    let nasty = "orders/<b>&\"x\".csv";
    s.drop_file(nasty, b"id,v\n1,\"open\n");
    s.drop_file(&format!("{nasty}.ok"), b"");
    s.drop_file("invoices/later.csv", b"id\n1\n"); // no marker: waits
    let mut d = start_watch(&s, &["--metrics", &addr]);
    wait_for_files(&s, 2);
    let html = page(port, "/");
    sigterm(&mut d);

    let els = elements(&html);
    let meta = els
        .iter()
        .find(|e| e.tag == "meta" && e.attr("name") == Some("viewport"))
        .expect("a viewport for phones");
    assert!(meta.attr("content").unwrap().contains("width=device-width"));
    assert!(
        !els.iter()
            .any(|e| e.tag == "script" || e.attr("src").is_some()),
        "no scripts, no external assets"
    );
    let state = els.iter().find(|e| e.attr("data-state").is_some()).unwrap();
    assert_eq!(state.attr("data-state"), Some("running"));

    // Feeds: the dataset's row, with its counts in the last hour.
    let row = els
        .iter()
        .position(|e| e.tag == "tr" && e.attr("data-dataset") == Some("orders"))
        .expect("a row for orders");
    let cell = |col: &str| {
        els[row..]
            .iter()
            .find(|e| e.attr("data-col") == Some(col))
            .unwrap()
            .text
            .clone()
    };
    assert_eq!(cell("files_hour"), "2");
    assert_eq!(cell("records_hour"), "2");
    assert_eq!(cell("records"), "2");
    assert_eq!(cell("quarantined"), "1");

    // Quarantine: the file by its id, with its name intact (escaped, not markup) and its kind.
    let id = s.files_by_path()["orders/<b>&\"x\".csv"]["id"]
        .as_i64()
        .unwrap();
    let q = els
        .iter()
        .position(|e| e.tag == "tr" && e.attr("data-id") == Some(&id.to_string()))
        .expect("the quarantined file is listed");
    assert!(
        els[q].text.contains("orders/<b>&\"x\".csv"),
        "{}",
        els[q].text
    );
    assert!(
        !els.iter().any(|e| e.tag == "b"),
        "a file name never becomes markup"
    );
    assert!(els[q..]
        .iter()
        .any(|e| e.attr("data-col") == Some("kind") && e.text == "csv.unterminated_quote"));

    // Waiting: the file without its marker, and the rule.
    let w = els
        .iter()
        .find(|e| e.tag == "tr" && e.text.contains("invoices/later.csv"))
        .expect("the waiting file is listed");
    assert!(w.text.contains("no_done_marker"), "{}", w.text);
}

/// The metric names a document refers to (`ferry_…`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("ferry_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        // A name, not a word in a comment ("ferry_*").
        if name.len() > "ferry_".len() {
            out.insert(name.to_string());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn dashboards_and_alerts_name_only_metrics_ferry_serves() {
    let s = Spool::new();
    let port = free_port();
    s.drop_file("orders/a.csv", b"id\n1\n");
    let mut d = start_watch(&s, &["--metrics", &format!("127.0.0.1:{port}")]);
    wait_for_files(&s, 1);
    let metrics = page(port, "/metrics");
    sigterm(&mut d);
    // Served: every sample's name, and every metric declared (a labelled counter has no
    // samples until it first counts, e.g. quarantined files by kind).
    let served: BTreeSet<String> = metrics
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(t) => t.split(' ').next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(str::to_string)
        .collect();
    assert!(served.contains("ferry_dataset_records_total"), "{metrics}");

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let dashboard = fs::read_to_string(root.join("grafana-dashboard.json")).unwrap();
    let alerts = fs::read_to_string(root.join("prometheus-alerts.yml")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("valid JSON");
    assert!(json["panels"].as_array().is_some_and(|p| !p.is_empty()));
    assert!(
        json["__inputs"][0]["pluginId"] == "prometheus",
        "importable"
    );
    for (file, text) in [("dashboard", &dashboard), ("alerts", &alerts)] {
        let named = metric_names(text);
        assert!(named.len() >= 8, "{file} names {named:?}");
        let missing: Vec<_> = named.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "the {file} names metrics ferry does not serve: {missing:?}"
        );
    }
    // The alert rules the operations guide promises.
    for alert in [
        "FerryQuarantineRateHigh",
        "FerryNoSuccess",
        "FerryRestarting",
        "FerryFilesWaitingTooLong",
    ] {
        assert!(alerts.contains(&format!("alert: {alert}")), "{alert}");
    }
}

#[test]
fn watch_prunes_when_retention_is_set() {
    let s = Spool::new();
    fs::write(s.root.join("ferry.toml"), "[retention]\narchive_days = 1\n").unwrap();
    s.drop_file("orders/a.csv", b"id\n1\n");
    s.ferry_ok(&["run"], 0);
    let archived = s.root.join(s.files()[0]["stored_at"].as_str().unwrap());
    s.query("UPDATE files SET finished_at = '2020-01-01T00:00:00Z'");
    let port = free_port();
    let mut d = start_watch(&s, &["--metrics", &format!("127.0.0.1:{port}")]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while archived.exists() {
        assert!(Instant::now() < deadline, "watch did not prune");
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = page(port, "/metrics");
    sigterm(&mut d);
    assert!(
        metrics.contains("ferry_pruned_files_total{area=\"archive\"} 1"),
        "{metrics}"
    );
    assert!(s.files()[0]["pruned_at"].is_string());
}

#[test]
fn health_probes_answer_while_hundreds_of_clients_idle_or_trickle() {
    use std::io::{Read, Write};
    let s = Spool::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut d = start_watch(&s, &["--metrics", &addr]);
    wait_probe(port, "/healthz", (200, "running"), Duration::from_secs(20));
    // 200 connections that never say anything, and 20 that say one byte at a time.
    let idle: Vec<_> = (0..200)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tricklers: Vec<_> = (0..20)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                for b in b"GET /metrics HTTP/1.0\r\n".iter().cycle() {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) || c.write_all(&[*b]).is_err()
                    {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut slowest = Duration::ZERO;
    for path in [
        "/healthz", "/readyz", "/metrics", "/healthz", "/", "/healthz",
    ] {
        let t = Instant::now();
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(c, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.0 200"), "{path}: {out}");
        slowest = slowest.max(t.elapsed());
    }
    // Before, each idle client held the one responder for its 2 s read timeout in turn.
    assert!(
        slowest < Duration::from_secs(1),
        "slowest probe {slowest:?}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in tricklers {
        t.join().unwrap();
    }
    drop(idle);
    sigterm(&mut d);
}

#[test]
fn the_status_page_lists_the_first_50_waiting_files_and_counts_the_rest() {
    let s = Spool::new();
    fs::write(
        s.root.join("ferry.toml"),
        "[ready]\ndone_marker = \".ok\"\n",
    )
    .unwrap();
    for i in 0..60 {
        s.drop_file(
            &format!("partner/with/a/very/long/folder/name/file-{i:03}.csv"),
            b"id\n1\n",
        );
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut d = start_watch(&s, &["--metrics", &addr]);
    wait_probe(port, "/healthz", (200, "running"), Duration::from_secs(20));
    let html = page(port, "/");
    sigterm(&mut d);
    let els = elements(&html);
    let rows = els
        .iter()
        .filter(|e| e.tag == "tr" && e.text.contains("file-0"))
        .count();
    assert_eq!(rows, 50);
    let more = els
        .iter()
        .find(|e| e.attr("id") == Some("waiting-more"))
        .unwrap();
    assert!(more.text.starts_with("and 10 more"), "{}", more.text);
    // Long paths may break at each folder; tables never need a sideways scroll.
    assert!(html.contains("partner/<wbr>with/<wbr>a/<wbr>"));
    assert!(!html.contains("overflow-x"));
}
