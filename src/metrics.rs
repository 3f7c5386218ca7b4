//! `--metrics ADDR`: Prometheus text exposition of the process-wide counters on `GET /metrics`,
//! and the daemon's health on `GET /healthz` and `GET /readyz` (`health`).
//!
//! A deliberately small HTTP/1.0 responder on its own thread: one request per connection, no
//! keep-alive, reads at most the request head. It serves every connection at once from one
//! `poll(2)` loop over non-blocking sockets, each with a deadline for the whole request (read
//! and write), so idle or trickling clients — hundreds of them — cannot delay a health probe:
//! they only hold a slot until their deadline. The status page, which reads the store, is
//! rendered on a thread of its own (at most `PAGES` at once), never in the loop.

use crate::config::Config;
use crate::events::{counters, Counters, LATENCY_BUCKETS_MS};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a connection may take for its whole request: reading the head, writing the answer.
const DEADLINE: Duration = Duration::from_secs(2);
/// Connections served at once; more wait in the listen queue.
const MAX_CONNS: usize = 1024;
/// Status pages rendered at once; more are answered 503.
const PAGES: usize = 2;
/// The longest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// Binds `addr` and serves `/metrics`, the health probes and (with `cfg`) the status page at
/// `/` until the process exits. Returns the bound address (a port of 0 picks a free one).
pub fn serve(addr: SocketAddr, cfg: Option<Arc<std::sync::RwLock<Config>>>) -> Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("binding the metrics address {addr}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    started_ms();
    std::thread::Builder::new()
        .name("ferry-metrics".into())
        .spawn(move || {
            let mut server = Server {
                listener,
                conns: Vec::new(),
                cfg,
                pages: Arc::new(AtomicUsize::new(0)),
            };
            loop {
                server.turn();
            }
        })?;
    tracing::info!(addr = %bound, "serving metrics on /metrics");
    Ok(bound)
}

/// One client connection: reading its head, then writing its answer.
struct Conn {
    s: TcpStream,
    head: Vec<u8>,
    out: Option<(Vec<u8>, usize)>,
    deadline: Instant,
}

struct Server {
    listener: TcpListener,
    conns: Vec<Conn>,
    /// The config as it is now (a reload replaces it), for the status page.
    cfg: Option<Arc<std::sync::RwLock<Config>>>,
    pages: Arc<AtomicUsize>,
}

impl Server {
    /// Waits for something to do (at most until the nearest deadline) and does it.
    fn turn(&mut self) {
        let now = Instant::now();
        let accepting = self.conns.len() < MAX_CONNS;
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(self.conns.len() + 1);
        fds.push(libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: if accepting { libc::POLLIN } else { 0 },
            revents: 0,
        });
        for c in &self.conns {
            fds.push(libc::pollfd {
                fd: c.s.as_raw_fd(),
                events: if c.out.is_some() {
                    libc::POLLOUT
                } else {
                    libc::POLLIN
                },
                revents: 0,
            });
        }
        let wait = self
            .conns
            .iter()
            .map(|c| c.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the call.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                wait.as_millis().max(1) as libc::c_int,
            )
        };
        if n < 0 {
            return;
        }
        let now = Instant::now();
        // Connections with something to do, then those past their deadline, are finished.
        let mut keep = Vec::with_capacity(self.conns.len());
        for (i, mut c) in std::mem::take(&mut self.conns).into_iter().enumerate() {
            let ready = fds[i + 1].revents != 0;
            let alive = if ready { self.work(&mut c) } else { true };
            if alive && now < c.deadline {
                keep.push(c);
            }
        }
        self.conns = keep;
        if fds[0].revents != 0 {
            self.accept(now);
        }
    }

    fn accept(&mut self, now: Instant) {
        while self.conns.len() < MAX_CONNS {
            match self.listener.accept() {
                Ok((s, _)) => {
                    if s.set_nonblocking(true).is_ok() {
                        self.conns.push(Conn {
                            s,
                            head: Vec::new(),
                            out: None,
                            deadline: now + DEADLINE,
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: cannot accept a connection");
                    return;
                }
            }
        }
    }

    /// Reads or writes what the connection allows now; false when it is finished.
    fn work(&self, c: &mut Conn) -> bool {
        if let Some((out, sent)) = &mut c.out {
            return loop {
                match c.s.write(&out[*sent..]) {
                    Ok(0) => break false,
                    Ok(n) => {
                        *sent += n;
                        if *sent == out.len() {
                            break false;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break false,
                }
            };
        }
        let mut buf = [0u8; 2048];
        loop {
            match c.s.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    c.head.extend_from_slice(&buf[..n]);
                    if complete(&c.head) || c.head.len() > MAX_HEAD {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        let (method, path) = request_line(&c.head);
        if matches!(method.as_str(), "GET" | "HEAD") && path == "/" && self.cfg.is_some() {
            self.page(c, method == "HEAD");
            return false;
        }
        c.out = Some((answer(&method, &path), 0));
        self.work(c)
    }

    /// Hands a status-page request to a thread of its own (the page reads the store).
    fn page(&self, c: &mut Conn, head_only: bool) {
        let Ok(s) = c.s.try_clone() else { return };
        if self.pages.fetch_add(1, Ordering::SeqCst) >= PAGES {
            self.pages.fetch_sub(1, Ordering::SeqCst);
            c.out = Some((
                response("503 Service Unavailable", "text/plain", "busy\n", head_only),
                0,
            ));
            let _ = self.work(c);
            return;
        }
        let (cfg, pages) = (self.cfg.clone().expect("checked"), self.pages.clone());
        let spawned = std::thread::Builder::new()
            .name("ferry-page".into())
            .spawn(move || {
                let mut s = s;
                let _ = s.set_nonblocking(false);
                let _ = s.set_write_timeout(Some(DEADLINE));
                let cfg = cfg.read().unwrap_or_else(|p| p.into_inner()).clone();
                let (status, page) = crate::page::render(&cfg);
                let out = response(status, "text/html; charset=utf-8", &page, head_only);
                let _ = s.write_all(&out);
                pages.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.pages.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Whether a request head is complete.
fn complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// The method and path of a request head.
fn request_line(head: &[u8]) -> (String, String) {
    let line = String::from_utf8_lossy(head);
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("");
    (method, target.split('?').next().unwrap_or("").to_string())
}

/// The answer to a request that is not the status page.
fn answer(method: &str, path: &str) -> Vec<u8> {
    let head_only = method == "HEAD";
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", "text/plain; version=0.0.4", render()),
        ("GET" | "HEAD", "/healthz" | "/readyz") => {
            let (status, body) = crate::health::probe(path == "/readyz");
            (status, "application/json", body)
        }
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain",
            "not found; try /, /metrics, /healthz or /readyz\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    response(status, ctype, &body, head_only)
}

fn response(status: &str, ctype: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    out.into_bytes()
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

/// `ferry run --metrics-file`: the counters and gauges, and the run itself — when it ended,
/// how long it took, its exit code.
/// Each receipts or webhook channel as the daemon's deliverer last counted it.
fn render_deliveries(o: &mut String) {
    let channels = crate::notify::live();
    if channels.is_empty() {
        return;
    }
    for (name, help, get) in [
        (
            "ferry_notices_delivered",
            "Receipts and webhook calls delivered, by channel.",
            (|c: &crate::store::ChannelStatus| c.delivered)
                as fn(&crate::store::ChannelStatus) -> u64,
        ),
        (
            "ferry_notices_owed",
            "Finished files whose receipt or webhook call is not delivered yet, by channel.",
            |c| c.owed,
        ),
        (
            "ferry_notices_failing",
            "Owed notices whose last attempt failed (retried with back-off), by channel.",
            |c| c.failing,
        ),
    ] {
        head(o, name, "gauge", help);
        for c in &channels {
            let _ = writeln!(o, "{name}{{channel=\"{}\"}} {}", label(&c.channel), get(c));
        }
    }
}

/// Each remote source as the daemon's poller last saw it (`remote::poll::status`).
fn render_sources(o: &mut String) {
    let sources = crate::remote::poll::status();
    if sources.is_empty() {
        return;
    }
    let label = |n: &str| n.replace('\\', "\\\\").replace('"', "\\\"");
    head(
        o,
        "ferry_source_up",
        "gauge",
        "1 when the source's last poll worked, 0 while it backs off.",
    );
    for (name, st) in &sources {
        let up = u8::from(st.state == "ok");
        let _ = writeln!(o, "ferry_source_up{{source=\"{}\"}} {up}", label(name));
    }
    for (metric, kind, help, get) in [
        (
            "ferry_source_files_seen",
            "gauge",
            "Files in the source's last listing.",
            (|s: &crate::remote::poll::SourceStatus| s.seen) as fn(&_) -> u64,
        ),
        (
            "ferry_source_files_ready",
            "gauge",
            "Files of the last listing ready to fetch.",
            |s| s.ready,
        ),
        (
            "ferry_source_files_fetched_total",
            "counter",
            "Files downloaded and handed over.",
            |s| s.fetched,
        ),
        (
            "ferry_source_fetch_failures_total",
            "counter",
            "Downloads discarded (retried).",
            |s| s.failed,
        ),
        (
            "ferry_source_bytes_fetched_total",
            "counter",
            "Bytes downloaded.",
            |s| s.bytes_fetched,
        ),
    ] {
        head(o, metric, kind, help);
        for (name, st) in &sources {
            let _ = writeln!(o, "{metric}{{source=\"{}\"}} {}", label(name), get(st));
        }
    }
    head(
        o,
        "ferry_source_last_listing_timestamp_seconds",
        "gauge",
        "Unix time the source was last listed.",
    );
    for (name, st) in &sources {
        if let Some(t) = st.last_listing_unix {
            let _ = writeln!(
                o,
                "ferry_source_last_listing_timestamp_seconds{{source=\"{}\"}} {t}",
                label(name)
            );
        }
    }
}

pub fn render_run(took: Duration, exit_code: u8) -> String {
    let mut o = render();
    head(
        &mut o,
        "ferry_run_end_timestamp_seconds",
        "gauge",
        "Unix time the last `ferry run` ended.",
    );
    let ms = chrono::Utc::now().timestamp_millis();
    let _ = writeln!(
        o,
        "ferry_run_end_timestamp_seconds {}.{:03}",
        ms / 1000,
        ms % 1000
    );
    head(
        &mut o,
        "ferry_run_duration_seconds",
        "gauge",
        "How long the last `ferry run` took.",
    );
    let _ = writeln!(o, "ferry_run_duration_seconds {:.3}", took.as_secs_f64());
    head(
        &mut o,
        "ferry_run_exit_code",
        "gauge",
        "The exit code of the last `ferry run` (0 done, 3 files quarantined, 5 files left).",
    );
    let _ = writeln!(o, "ferry_run_exit_code {exit_code}");
    o
}

/// The exposition text of every counter and gauge.
pub fn render() -> String {
    let c = counters();
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut o = String::new();
    render_sources(&mut o);
    render_deliveries(&mut o);

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
    let fields: [(&str, &str, &str, Field); 5] = [
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
            "ferry_dataset_updated_records_total",
            "counter",
            "Records that replaced a stored record with the same key (on_key = \"update\"), \
             by dataset.",
            |d| d.updated_records,
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
fn scalars(c: &Counters) -> [(&'static str, &'static str, &'static str, &AtomicU64); 9] {
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
            "ferry_updated_records_total",
            "counter",
            "Records stored that replaced a stored record with the same key (on_key = \"update\").",
            &c.updated_records,
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
