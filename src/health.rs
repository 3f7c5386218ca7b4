//! The daemon's state, as `/healthz` and `/readyz` report it.
//!
//! `ferry watch` sets it as it supervises its pipeline; the metrics endpoint reads it. Healthy
//! (`/healthz` 200): starting, or running with the store reachable. Ready (`/readyz` 200):
//! running. Anything else — backing off after the store or the disk failed, stopping — is 503
//! with the reason, so an orchestrator or a load balancer sees what the log says.

use serde::Serialize;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum State {
    /// Not started yet (a process that is not `ferry watch`, or one setting up).
    Starting,
    /// The pipeline runs: files are claimed and loaded.
    Running,
    /// The pipeline stopped on an error about the machine (the store unreachable, a full disk)
    /// and is started again at `retry_at_ms` (Unix milliseconds).
    BackingOff { reason: String, retry_at_ms: u64 },
    /// Finishing the files in flight before exiting.
    Stopping,
}

static STATE: Mutex<State> = Mutex::new(State::Starting);

pub fn set(s: State) {
    *STATE.lock().unwrap_or_else(|p| p.into_inner()) = s;
}

/// The pipeline stopped for `reason`; it is tried again after `wait`.
pub fn backing_off(reason: &str, wait: Duration) {
    let at = SystemTime::now() + wait;
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    set(State::BackingOff {
        reason: reason.to_string(),
        retry_at_ms: ms,
    });
}

pub fn get() -> State {
    STATE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// `/healthz` or `/readyz`: the HTTP status and the JSON body.
pub fn probe(ready: bool) -> (&'static str, String) {
    let state = get();
    let ok = match state {
        State::Running => true,
        State::Starting => !ready,
        State::BackingOff { .. } | State::Stopping => false,
    };
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "daemon": state,
    });
    let status = if ok {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    (status, format!("{body}\n"))
}
