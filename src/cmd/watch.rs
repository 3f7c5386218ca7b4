//! `ferry watch [--poll INTERVAL] [--rescan INTERVAL]`: the daemon.
//!
//! It shares the ingest path with `ferry run` and adds only discovery and shutdown. Discovery:
//! OS events (notify; inotify on Linux) are a *hint* that something changed — any hint triggers a
//! scan of the incoming folder, storms of hints coalesce into one scan — and a full rescan every
//! `--rescan` (30 s) is the truth that catches whatever events missed. With `--poll` no events
//! are used at all: the folder is scanned every INTERVAL (network filesystems send none).
//!
//! A file that was *moved in* is complete the moment the event arrives, so it is taken without
//! waiting out the quiet period; anything else waits for `settle` (a close after writing is not
//! trusted: writers reopen and append). A writer that pauses for longer than `settle` without a
//! temp name or done marker cannot be told from a finished one — such partners should upload
//! under a temp name and rename, or write a done marker.
//!
//! Shutdown is a value (`Shutdown`): SIGINT/SIGTERM flip it, the loop stops claiming, the pipeline
//! finishes the files in flight, and the command returns.

use super::Outcome;
use crate::cli::WatchArgs;
use crate::config::Config;
use crate::discover::{self, Readiness, Stamp};
use crate::pipeline::{place, Ctx, Mode, Pipeline, Work};
use crate::shutdown::{self, Shutdown};
use anyhow::{Context, Result};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often files still settling are looked at again.
const RECHECK: Duration = Duration::from_millis(100);

pub fn run(cfg: &Config, args: &WatchArgs) -> Result<Outcome> {
    shutdown::install_signal_handlers();
    watch(cfg, args, &Shutdown::new())
}

/// The daemon loop, until `stop` is triggered.
pub fn watch(cfg: &Config, args: &WatchArgs, stop: &Shutdown) -> Result<Outcome> {
    let incoming = cfg.spool.incoming.clone();
    std::fs::create_dir_all(&incoming)?;
    let ctx = Arc::new(Ctx::new(cfg.clone(), Mode::Move, incoming.clone())?);
    let recovered = place::recover(&ctx)?;
    let pipeline = Pipeline::start(ctx.clone())?;
    for w in recovered {
        pipeline.submit(w);
    }

    let (hint_tx, hints) = unbounded::<Event>();
    // Kept alive for the loop's lifetime; dropping it stops the events.
    let _watcher = match args.poll {
        Some(_) => None,
        None => {
            let mut w = notify::recommended_watcher(move |ev: notify::Result<Event>| {
                if let Ok(ev) = ev {
                    let _ = hint_tx.send(ev);
                }
            })
            .context("starting the file watcher")?;
            w.watch(&incoming, RecursiveMode::Recursive)
                .with_context(|| format!("watching {}", incoming.display()))?;
            Some(w)
        }
    };
    let rescan = args
        .poll
        .unwrap_or(args.rescan)
        .max(Duration::from_millis(10));
    tracing::info!(
        incoming = %incoming.display(),
        mode = if args.poll.is_some() { "poll" } else { "events" },
        rescan_ms = rescan.as_millis() as u64,
        "watching"
    );

    let mut disc = Discovery {
        cfg,
        readiness: Readiness::default(),
        submitted: HashMap::new(),
    };
    let mut last_scan: Option<Instant> = None;
    let mut settling = false;
    while !stop.is_triggered() {
        let now = Instant::now();
        let next_full = last_scan.map_or(now, |t| t + rescan);
        let wait = if settling {
            RECHECK
        } else {
            next_full.saturating_duration_since(now)
        };
        // Capped, so a stop request is seen promptly.
        let hinted = wait_for_hints(&hints, wait.min(Duration::from_millis(200)), &mut disc);
        let now = Instant::now();
        let recheck = settling && last_scan.is_none_or(|t| now >= t + RECHECK);
        if !(hinted || now >= next_full || recheck) {
            continue;
        }
        last_scan = Some(now);
        match disc.scan_and_submit(&pipeline, &ctx) {
            Some(s) => settling = s,
            None => break, // the pipeline stopped (the writer failed); `finish` says why
        }
    }
    ctx.halt();
    tracing::info!("stopping: finishing the files in flight");
    let summary = pipeline.finish()?;
    tracing::info!(
        ingested = summary.ingested,
        quarantined = summary.quarantined,
        "stopped"
    );
    Ok(Outcome::Done)
}

/// Waits up to `wait` for OS events and drains a burst of them; true if any came. Files moved
/// in are marked complete. A close after writing is only a hint to look: a writer may reopen
/// and append again.
fn wait_for_hints(hints: &Receiver<Event>, wait: Duration, disc: &mut Discovery<'_>) -> bool {
    let first = match hints.recv_timeout(wait) {
        Ok(ev) => ev,
        Err(RecvTimeoutError::Timeout) => return false,
        Err(RecvTimeoutError::Disconnected) => {
            // The watcher is gone: nothing more will come, so the wait is a plain sleep rather
            // than a spin.
            std::thread::sleep(wait);
            return false;
        }
    };
    for ev in std::iter::once(first).chain(hints.try_iter()) {
        use notify::event::{ModifyKind, RenameMode};
        let complete = matches!(
            ev.kind,
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
        );
        if complete {
            for p in &ev.paths {
                if let Ok(m) = p.symlink_metadata() {
                    if m.is_file() {
                        disc.readiness.hint_complete(p, Stamp::of(&m));
                    }
                }
            }
        }
    }
    true
}

struct Discovery<'a> {
    cfg: &'a Config,
    readiness: Readiness,
    /// Files handed to the pipeline, with the stamp they had: not handed over again unless
    /// they change (a claim removes them from the folder, so this stays small).
    submitted: HashMap<PathBuf, Stamp>,
}

impl Discovery<'_> {
    /// Scans the incoming folder and submits what is ready. Returns whether some files are still
    /// settling, or `None` if the pipeline has stopped.
    fn scan_and_submit(&mut self, pipeline: &Pipeline, ctx: &Ctx) -> Option<bool> {
        let cfg = self.cfg;
        let scan = discover::scan(&cfg.spool.incoming, &cfg.rules, &cfg.spool.internal_dirs());
        for (path, e) in &scan.errors {
            tracing::warn!(path = %path.display(), error = %e, "cannot look into this path");
        }
        let present: std::collections::HashSet<PathBuf> =
            scan.entries.iter().map(|e| e.path.clone()).collect();
        self.submitted.retain(|p, _| present.contains(p));
        self.readiness.retain(|p| present.contains(p));
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut settling = false;
        for e in scan.entries {
            if self.submitted.get(&e.path) == Some(&e.stamp) {
                continue;
            }
            match self.readiness.check(&cfg.rules, &e, now, wall) {
                Ok(()) => {
                    if ctx.halted() {
                        return None;
                    }
                    self.submitted.insert(e.path.clone(), e.stamp);
                    if !pipeline.submit(Work::Fresh(e)) {
                        return None;
                    }
                }
                Err(discover::Hold::Settling { .. }) => settling = true,
                Err(_) => {}
            }
        }
        Some(settling)
    }
}
