//! `--metrics ADDR`: Prometheus text exposition of the process-wide counters on `GET /metrics`,
//! and the daemon's health on `GET /healthz` and `GET /readyz` (`health`).
//!
//! A deliberately small HTTP/1.0 responder on its own thread: one request per connection, no
//! keep-alive, reads at most the request head. Scrapes are rare (seconds apart) and tiny, so a
//! thread per connection would be waste and an HTTP crate would be weight; one accept loop
//! serving each scrape in turn is plenty.

use crate::config::Config;
use crate::events::{counters, Counters, LATENCY_BUCKETS_MS};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Binds `addr` and serves `/metrics`, the health probes and (with `cfg`) the status page at
/// `/` until the process exits. Returns the bound address (a port of 0 picks a free one).
pub fn serve(addr: SocketAddr, cfg: Option<Config>) -> Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("binding the metrics address {addr}"))?;
    let bound = listener.local_addr()?;
    started_ms();
    std::thread::Builder::new()
        .name("ferry-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = respond(s, cfg.as_ref()) {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics: cannot accept a connection");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    tracing::info!(addr = %bound, "serving metrics on /metrics");
    Ok(bound)
}

fn respond(mut s: TcpStream, cfg: Option<&Config>) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 16 * 1024 {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", "text/plain; version=0.0.4", render()),
        ("GET" | "HEAD", "/healthz" | "/readyz") => {
            let (status, body) = crate::health::probe(path == "/readyz");
            (status, "application/json", body)
        }
        ("GET" | "HEAD", "/") if cfg.is_some() => {
            let (status, page) = crate::page::render(cfg.expect("checked"));
            (status, "text/html; charset=utf-8", page)
        }
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain",
            "not found; try /, /metrics, /healthz or /readyz\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let mut out = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        out.push_str(&body);
    }
    s.write_all(out.as_bytes())
}

/// When this process started serving metrics (Unix milliseconds): a daemon that restarts
/// often shows as this changing.
fn started_ms() -> i64 {
    static AT: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *AT.get_or_init(|| chrono::Utc::now().timestamp_millis())
}

/// The daemon's state as gauges: when it started, and whether it is ready (`/readyz`).
fn process(o: &mut String) {
    head(
        o,
        "ferry_start_timestamp_seconds",
        "gauge",
        "Unix time this ferry process started.",
    );
    let ms = started_ms();
    let _ = writeln!(
        o,
        "ferry_start_timestamp_seconds {}.{:03}",
        ms / 1000,
        ms % 1000
    );
    head(
        o,
        "ferry_ready",
        "gauge",
        "1 while the pipeline runs (claiming and loading files), 0 while starting, backing off \
         after an error (store unreachable, disk full) or stopping.",
    );
    let ready = matches!(crate::health::get(), crate::health::State::Running);
    let _ = writeln!(o, "ferry_ready {}", u8::from(ready));
}

/// The exposition text of every counter and gauge.
pub fn render() -> String {
    let c = counters();
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut o = String::new();

    head(
        &mut o,
        "ferry_files_total",
        "counter",
        "Files finished, by outcome.",
    );
    for (outcome, v) in [
        ("ingested", &c.ingested),
        ("duplicate", &c.duplicate),
        ("quarantined", &c.quarantined),
        ("released", &c.released),
        ("left", &c.left),
    ] {
        let _ = writeln!(o, "ferry_files_total{{outcome=\"{outcome}\"}} {}", get(v));
    }
    head(
        &mut o,
        "ferry_quarantined_files_total",
        "counter",
        "Quarantined files, by error kind.",
    );
    for (kind, n) in c
        .quarantined_by_kind
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        let _ = writeln!(o, "ferry_quarantined_files_total{{kind=\"{kind}\"}} {n}");
    }
    for (name, kind, help, value) in scalars(c) {
        head(&mut o, name, kind, help);
        let _ = writeln!(o, "{name} {}", get(value));
    }
    head(
        &mut o,
        "ferry_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last ingested file (0: none yet).",
    );
    let last = c.last_success_ms.load(Ordering::Relaxed);
    let _ = writeln!(
        o,
        "ferry_last_success_timestamp_seconds {}.{:03}",
        last / 1000,
        last % 1000
    );
    head(
        &mut o,
        "ferry_oldest_waiting_file_seconds",
        "gauge",
        "How long the longest-waiting file in the incoming folder has been seen not ready by this \
         daemon (waiting for its done marker, settling, held by a rule); 0 when none waits.",
    );
    let ms = c.oldest_waiting_ms.load(Ordering::Relaxed);
    let _ = writeln!(
        o,
        "ferry_oldest_waiting_file_seconds {}.{:03}",
        ms / 1000,
        ms % 1000
    );
    latency(&mut o, c);
    process(&mut o);
    retention(&mut o, c);
    datasets(&mut o, c);
    o
}

/// What retention removed.
fn retention(o: &mut String, c: &Counters) {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    for (name, help, archive, quarantine) in [
        (
            "ferry_pruned_files_total",
            "Files retention removed, by area.",
            &c.pruned_archive,
            &c.pruned_quarantine,
        ),
        (
            "ferry_pruned_bytes_total",
            "Bytes of the files retention removed, by area.",
            &c.pruned_archive_bytes,
            &c.pruned_quarantine_bytes,
        ),
    ] {
        head(o, name, "counter", help);
        let _ = writeln!(o, "{name}{{area=\"archive\"}} {}", get(archive));
        let _ = writeln!(o, "{name}{{area=\"quarantine\"}} {}", get(quarantine));
    }
    head(
        o,
        "ferry_forgotten_ledger_rows_total",
        "counter",
        "Ledger rows retention forgot (ledger_days).",
    );
    let _ = writeln!(
        o,
        "ferry_forgotten_ledger_rows_total {}",
        get(&c.forgotten_rows)
    );
}

/// Per-dataset counters, labelled `dataset`.
fn datasets(o: &mut String, c: &Counters) {
    let all = c.datasets.lock().unwrap_or_else(|p| p.into_inner()).clone();
    head(
        o,
        "ferry_dataset_files_total",
        "counter",
        "Files finished, by dataset and outcome.",
    );
    for (name, d) in &all {
        let name = label(name);
        for (outcome, n) in [
            ("ingested", d.ingested),
            ("duplicate", d.duplicate),
            ("quarantined", d.quarantined),
        ] {
            let _ = writeln!(
                o,
                "ferry_dataset_files_total{{dataset=\"{name}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }
    type Field = fn(&crate::events::DatasetCounters) -> u64;
    let fields: [(&str, &str, &str, Field); 4] = [
        (
            "ferry_dataset_records_total",
            "counter",
            "Records stored, by dataset.",
            |d| d.records,
        ),
        (
            "ferry_dataset_rejected_records_total",
            "counter",
            "Records set aside within max_bad_records, by dataset.",
            |d| d.rejected_records,
        ),
        (
            "ferry_dataset_duplicate_records_total",
            "counter",
            "Records not stored because their key was already stored, by dataset.",
            |d| d.duplicate_records,
        ),
        (
            "ferry_dataset_bytes_total",
            "counter",
            "Bytes of input files finished, by dataset.",
            |d| d.bytes,
        ),
    ];
    for (metric, kind, help, field) in fields {
        head(o, metric, kind, help);
        for (name, d) in &all {
            let _ = writeln!(o, "{metric}{{dataset=\"{}\"}} {}", label(name), field(d));
        }
    }
    head(
        o,
        "ferry_dataset_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the dataset's last ingested file (0: none yet).",
    );
    for (name, d) in &all {
        let ms = d.last_success_ms.max(0);
        let _ = writeln!(
            o,
            "ferry_dataset_last_success_timestamp_seconds{{dataset=\"{}\"}} {}.{:03}",
            label(name),
            ms / 1000,
            ms % 1000
        );
    }
}

/// A label value as the exposition format writes it: `\`, `"` and line feeds escaped.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The metrics without labels: name, type, help and the counter or gauge.
fn scalars(c: &Counters) -> [(&'static str, &'static str, &'static str, &AtomicU64); 8] {
    [
        (
            "ferry_records_total",
            "counter",
            "Records stored.",
            &c.records,
        ),
        (
            "ferry_rejected_records_total",
            "counter",
            "Records set aside as bad within max_bad_records, in files that were ingested.",
            &c.rejected_records,
        ),
        (
            "ferry_duplicate_records_total",
            "counter",
            "Records not stored because their key was already stored.",
            &c.duplicate_records,
        ),
        (
            "ferry_unplaced_files_total",
            "counter",
            "Files whose outcome was recorded but that could not be moved to their place.",
            &c.unplaced,
        ),
        (
            "ferry_bytes_total",
            "counter",
            "Bytes of input files finished.",
            &c.bytes,
        ),
        (
            "ferry_queue_depth",
            "gauge",
            "Ready files handed to the pipeline and not yet taken by a worker.",
            &c.queue_depth,
        ),
        (
            "ferry_waiting_files",
            "gauge",
            "Files in the incoming folder not yet ready (settling, or waiting for a done marker).",
            &c.waiting,
        ),
        (
            "ferry_pipeline_restarts_total",
            "counter",
            "Times the daemon restarted its pipeline: after an error (disk full, database \
         error), or to place files left in processing/.",
            &c.restarts,
        ),
    ]
}

/// `# HELP` and `# TYPE` of one metric.
fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The ingest latency histogram.
fn latency(o: &mut String, c: &Counters) {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    head(
        o,
        "ferry_ingest_latency_seconds",
        "histogram",
        "From first sight of a ready file (claim) to its ledger commit.",
    );
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
        cumulative += get(&c.latency_buckets[i]);
        let _ = writeln!(
            o,
            "ferry_ingest_latency_seconds_bucket{{le=\"{}\"}} {cumulative}",
            *bound as f64 / 1000.0
        );
    }
    let count = get(&c.latency_count);
    let _ = writeln!(
        o,
        "ferry_ingest_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        o,
        "ferry_ingest_latency_seconds_sum {}",
        get(&c.latency_sum_us) as f64 / 1e6
    );
    let _ = writeln!(o, "ferry_ingest_latency_seconds_count {count}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_the_count() {
        let c = counters();
        c.latency_buckets[0].fetch_add(2, Ordering::Relaxed);
        c.latency_buckets[3].fetch_add(1, Ordering::Relaxed);
        c.latency_count.fetch_add(4, Ordering::Relaxed);
        let text = render();
        let bucket = |le: &str| -> u64 {
            let key = format!("ferry_ingest_latency_seconds_bucket{{le=\"{le}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&key)).unwrap();
            line[key.len()..].parse().unwrap()
        };
        assert!(bucket("0.005") >= 2);
        assert!(bucket("0.05") > bucket("0.005"));
        assert!(bucket("+Inf") >= bucket("30"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }

    #[test]
    fn dataset_labels_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
        counters().dataset("odd \"name\"", |d| d.records += 3);
        let text = render();
        assert!(text.contains(r#"ferry_dataset_records_total{dataset="odd \"name\""} 3"#));
    }
}
