//! `ferry watch` and remote sources: each source polled on its own thread, on its own
//! schedule (`poll`), backing off on its own when it fails (1 s doubling to 5 min), so a source
//! that is down holds up neither the others nor the local inbox. What each source did last is
//! kept in `status()` for `/metrics` and the status page.

use super::after::committed;
use super::pull::pull_source;
use crate::config::SourceSpec;
use crate::events::Summary;
use crate::pipeline::{Pipeline, Session};
use crate::shutdown::Shutdown;
use crate::store::RemoteKey;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Back-off of a failing source: first and longest wait.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));
/// How often a source thread looks at the stop flags.
const TURN: Duration = Duration::from_millis(100);

/// One source as the daemon last saw it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SourceStatus {
    /// `ok`, or `backing off` (with `last_error`).
    pub state: String,
    /// When the last listing ended (RFC 3339, and Unix seconds).
    pub last_listing: Option<String>,
    #[serde(skip)]
    pub last_listing_unix: Option<i64>,
    /// Files in the last listing, and of those ready to fetch.
    pub seen: u64,
    pub ready: u64,
    /// Since the daemon started.
    pub fetched: u64,
    pub failed: u64,
    pub bytes_fetched: u64,
    pub last_error: Option<String>,
    /// How long until it is tried again, while backing off.
    pub retry_in_ms: Option<u64>,
}

fn registry() -> &'static Mutex<BTreeMap<String, SourceStatus>> {
    static R: OnceLock<Mutex<BTreeMap<String, SourceStatus>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Every source's status, by name.
pub fn status() -> BTreeMap<String, SourceStatus> {
    registry().lock().map(|r| r.clone()).unwrap_or_default()
}

fn update(name: &str, f: impl FnOnce(&mut SourceStatus)) {
    if let Ok(mut r) = registry().lock() {
        f(r.entry(name.to_string()).or_default());
    }
}

/// Polls every source of the session's config until `done` is set (the pipeline is being
/// stopped) or a stop is asked for. Returns when every source thread has.
pub fn poll_until(session: &Session, pipeline: &Pipeline, stop: &Shutdown, done: &AtomicBool) {
    let sources = session.cfg.sources.clone();
    std::thread::scope(|scope| {
        for spec in &sources {
            std::thread::Builder::new()
                .name(format!("ferry-source-{}", spec.name))
                .spawn_scoped(scope, || poll_source(session, pipeline, stop, done, spec))
                .expect("a source thread");
        }
    });
}

fn poll_source(
    session: &Session,
    pipeline: &Pipeline,
    stop: &Shutdown,
    done: &AtomicBool,
    spec: &Arc<SourceSpec>,
) {
    let over = || done.load(Ordering::SeqCst) || stop.is_triggered() || session.halted();
    let mut due = Instant::now();
    let mut backoff = BACKOFF.0;
    // Files handed to this pipeline whose commit is awaited.
    let mut pending: Vec<RemoteKey> = Vec::new();
    let mut store = None;
    while !over() {
        if Instant::now() < due {
            std::thread::sleep(TURN.min(due - Instant::now()));
            continue;
        }
        let result = (|| -> anyhow::Result<super::pull::Polled> {
            let s = match &mut store {
                Some(s) => s,
                None => store.insert(crate::store::open(&session.cfg.store)?),
            };
            pending = committed(session, &mut **s, spec, &pending, false)?;
            let mut summary = Summary::default();
            pull_source(session, pipeline, stop, spec, &mut **s, &mut summary)
        })();
        match result {
            Ok(polled) => {
                pending.extend(polled.keys.iter().cloned());
                backoff = BACKOFF.0;
                due = Instant::now() + spec.poll;
                update(&spec.name, |st| {
                    st.state = "ok".into();
                    st.last_listing = Some(crate::store::now());
                    st.last_listing_unix = Some(chrono::Utc::now().timestamp());
                    st.seen = polled.listed as u64;
                    st.ready = polled.ready as u64;
                    st.fetched += polled.keys.len() as u64;
                    st.failed += polled.failed as u64;
                    st.bytes_fetched += polled.bytes;
                    st.retry_in_ms = None;
                });
            }
            Err(e) => {
                // The connection to the store may be the broken part: opened again next time.
                store = None;
                let why = format!("{e:#}");
                tracing::error!(source = %spec.name, error = %why, retry_in = ?backoff,
                    "cannot pull this source; backing off");
                due = Instant::now() + backoff;
                update(&spec.name, |st| {
                    st.state = "backing off".into();
                    st.last_error = Some(why);
                    st.retry_in_ms = Some(backoff.as_millis() as u64);
                });
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
    // Files still in flight commit when the pipeline finishes; their claims are reconciled by
    // the next pipeline's first poll (loaded: disposed of; not: taken over once this owner is
    // gone, and judged by content identity).
}
