//! `ferry watch [--poll INTERVAL] [--rescan INTERVAL] [--metrics ADDR]`: the daemon.
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
//!
//! SIGHUP re-reads `ferry.toml`: the files in flight are finished, and the pipeline starts again
//! under the new config (datasets, readiness rules, retention, the status page). A config that
//! does not load, or that names another spool, incoming folder or store (those need a restart),
//! is refused with the reason in the log; the config in use is kept.
//!
//! Resilience: the daemon supervises its own pipeline. When the writer stops on an error that is
//! about the machine rather than a file (disk full, database unreadable or locked for too long),
//! nothing of the open transaction happened; the daemon logs an ERROR, stops claiming, waits
//! (1 s doubling to 60 s) and starts again: recovery takes the claimed files back from
//! `processing/`, so they are loaded once space returns. Committed files that could not be moved
//! to their place wait in `processing/`; at the next full rescan the pipeline is restarted and
//! recovery places them (without loading them again). An incoming folder that vanishes (an
//! unmounted share) is looked for every second and watched again when it returns; files that
//! cannot be read are left in place and tried again on every full rescan.

use super::Outcome;
use crate::cli::WatchArgs;
use crate::config::Config;
use crate::discover::{self, Events, Readiness, Stamp};
use crate::events::{counters, Summary};
use crate::health;
use crate::pipeline::{Mode, Pipeline, Session, Work};
use crate::shutdown::{self, Shutdown};
use anyhow::Result;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often files still settling are looked at again.
const RECHECK: Duration = Duration::from_millis(100);
/// How often a vanished incoming folder is looked for.
const MISSING_RECHECK: Duration = Duration::from_secs(1);
/// Longest wait between loop turns, so a stop request is seen promptly.
const TURN: Duration = Duration::from_millis(200);
/// Back-off after the pipeline stopped on an error: first and longest wait.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// A pipeline that ran this long without failing resets the back-off.
const HEALTHY: Duration = Duration::from_secs(60);
/// How often the daemon delivers owed receipts and webhook calls.
const NOTICES: Duration = Duration::from_secs(1);

/// Loads the config again, as the command line named it (for SIGHUP).
pub type Reload<'a> = &'a dyn Fn() -> Result<Config>;

pub fn run(cfg: &Config, args: &WatchArgs, reload: Reload) -> Result<Outcome> {
    shutdown::install_signal_handlers();
    shutdown::install_reload_handler();
    watch(cfg, args, &Shutdown::new(), reload)
}

/// The daemon, until `stop` is triggered.
pub fn watch(
    first_cfg: &Config,
    args: &WatchArgs,
    stop: &Shutdown,
    reload: Reload,
) -> Result<Outcome> {
    let mut cfg = first_cfg.clone();
    let cfg = &mut cfg;
    super::open_or_create_spool(cfg, args.init)?;
    for w in &cfg.warnings {
        tracing::warn!("config: {w}");
    }
    let incoming = cfg.spool.incoming.clone();
    std::fs::create_dir_all(&incoming)?;
    seed_last_success(cfg);
    // The config as it is now, for the threads that outlive a pipeline (a reload replaces it).
    let live = Arc::new(std::sync::RwLock::new(cfg.clone()));
    let (mut events, rescan) = listen(cfg, args, &live)?;
    let mut disc = Discovery {
        readiness: Readiness::default(),
        submitted: HashMap::new(),
        rescan,
        waiting_since: HashMap::new(),
    };
    let _retention = retention(&live, stop)?;
    crate::notify::open_channels(cfg)?;
    // Receipts and webhooks, beside loading (a place that is down never holds a file up).
    let _notices = Joined(
        Some(crate::notify::deliverer(
            live.clone(),
            stop.clone(),
            NOTICES,
        )?),
        stop.clone(),
    );
    let mut backoff = BACKOFF.0;
    let mut first = true;
    loop {
        if shutdown::take_reload() {
            reload_config(cfg, reload, &live);
        }
        let started = Instant::now();
        let session = start_pipeline(cfg, &incoming);
        let (session, pipeline) = match session {
            Ok(s) => s,
            // A first start that fails is a setup problem: say so and exit. Unless the store
            // cannot be reached yet (a database server starting after ferry, a network not up):
            // that is waited out like any later failure.
            Err(e) if first && !crate::store::is_unreachable(&e) => return Err(e),
            Err(e) => {
                if back_off(
                    stop,
                    &mut backoff,
                    &format!("{e:#}"),
                    "cannot restart the pipeline",
                ) {
                    return Ok(Outcome::Done);
                }
                continue;
            }
        };
        first = false;
        health::set(health::State::Running);
        // Files handed to the old pipeline and dropped when it stopped are still in the folder.
        disc.submitted.clear();
        crate::remote::pull::tidy(cfg, &session);
        // Remote sources are polled on threads of their own while discovery runs.
        let polling_over = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            if !cfg.sources.is_empty() {
                scope.spawn(|| {
                    crate::remote::poll::poll_until(&session, &pipeline, stop, &polling_over)
                });
            }
            discover_until_stopped(&mut disc, cfg, &mut events, (&pipeline, &session), stop);
            polling_over.store(true, Ordering::SeqCst);
        });
        // Halted already: the writer failed. Otherwise we stopped for a reason of our own.
        let failed = session.halted();
        session.halt();
        if stop.is_triggered() {
            health::set(health::State::Stopping);
            tracing::info!("stopping: finishing the files in flight");
        } else if failed {
            health::backing_off("the pipeline stopped on an error", backoff);
        }
        let finished = pipeline.finish();
        if stop.is_triggered() {
            log_stopped(&finished?);
            return Ok(Outcome::Done);
        }
        counters().restarts.fetch_add(1, Ordering::Relaxed);
        if !failed
            && (session.has_unplaced() || session.has_leftovers() || shutdown::reload_requested())
        {
            // A planned restart, to place files, take over a dead process's claims, or read the
            // config again (see `discover_until_stopped`).
            continue;
        }
        // The pipeline stopped by itself: the writer failed on something about the machine.
        if started.elapsed() >= HEALTHY {
            backoff = BACKOFF.0;
        }
        let why = match finished {
            Err(e) => format!("{e:#}"),
            Ok(_) => "the pipeline stopped".to_string(),
        };
        let what = "stopped claiming files; files in flight stay in processing/ and are taken \
                    again on restart";
        if back_off(stop, &mut backoff, &why, what) {
            return Ok(Outcome::Done);
        }
    }
}

/// The daily prune when retention is set, joined when the daemon stops (the guard's drop), so a
/// prune is not cut between a file's removal and its ledger mark.
fn retention(live: &Arc<std::sync::RwLock<Config>>, stop: &Shutdown) -> Result<Joined> {
    let thread = crate::retention::daily(live.clone(), stop.clone())?;
    Ok(Joined(Some(thread), stop.clone()))
}

/// SIGHUP: the config read again, and used from the next pipeline on when it loads and names
/// the same spool, incoming folder and store; else refused, and the config in use kept.
fn reload_config(cfg: &mut Config, reload: Reload, live: &Arc<std::sync::RwLock<Config>>) {
    let fresh = match reload() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "SIGHUP: the config does not load; keeping the one in use"
            );
            return;
        }
    };
    let moved = [
        ("the spool", fresh.spool.root != cfg.spool.root),
        (
            "the incoming folder",
            fresh.spool.incoming != cfg.spool.incoming,
        ),
        ("the store", fresh.store != cfg.store),
    ];
    if let Some((what, _)) = moved.iter().find(|(_, changed)| *changed) {
        tracing::error!(
            "SIGHUP: the new config names another {what}, which takes a restart; keeping the \
             config in use"
        );
        return;
    }
    for w in &fresh.warnings {
        tracing::warn!("config: {w}");
    }
    *live.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
    *cfg = fresh;
    tracing::info!(datasets = cfg.datasets.len(), "SIGHUP: config reloaded");
}

/// The per-dataset last-success gauges start from the ledger, so a feed that fell silent
/// before a restart still shows (and alerts) as silent after it.
fn seed_last_success(cfg: &Config) {
    let last = crate::store::open_existing(&cfg.store).and_then(|s| match s {
        Some(mut s) => s.last_success(),
        None => Ok(Vec::new()),
    });
    match last {
        Ok(last) => counters().seed_last_success(&last),
        Err(e) => tracing::warn!(
            error = format!("{e:#}"),
            "cannot read when each dataset last loaded a file; its gauge starts empty"
        ),
    }
}

/// A helper thread that ends when the daemon's stop is triggered, waited for on the way out
/// (on an error exit it is left to end with the process).
struct Joined(Option<std::thread::JoinHandle<()>>, Shutdown);

impl Drop for Joined {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            if self.1.is_triggered() {
                let _ = h.join();
            }
        }
    }
}

/// After the pipeline failed (or could not start) for `why`: says so (log and health), waits
/// `backoff` and doubles it for next time. Returns whether a stop was asked for meanwhile.
fn back_off(stop: &Shutdown, backoff: &mut Duration, why: &str, what: &str) -> bool {
    health::backing_off(why, *backoff);
    tracing::error!(error = why, retry_in_s = backoff.as_secs(), "{what}");
    if sleep_unless(stop, *backoff) {
        return true;
    }
    *backoff = (*backoff * 2).min(BACKOFF.1);
    false
}

/// Starts the metrics endpoint and the event watch (unless polling); the interval of full
/// rescans. Flags win over the config file's `[watch]` section.
fn listen(
    cfg: &Config,
    args: &WatchArgs,
    live: &Arc<std::sync::RwLock<Config>>,
) -> Result<(Events, Duration)> {
    let incoming = &cfg.spool.incoming;
    let poll = args.poll.or(cfg.watch.poll);
    if let Some(addr) = args.metrics.or(cfg.watch.metrics) {
        crate::metrics::serve(addr, Some(live.clone()))?;
    }
    let mut events = Events::new(poll.is_none());
    if let Err(e) = events.ensure(incoming) {
        // E.g. the inotify watch limit: scans still find every file, only later.
        tracing::error!(
            error = format!("{e:#}"),
            "cannot watch the incoming folder; relying on rescans until it can"
        );
    }
    let rescan = poll
        .unwrap_or(args.rescan.unwrap_or(cfg.watch.rescan))
        .max(Duration::from_millis(10));
    tracing::info!(
        incoming = %incoming.display(),
        mode = if poll.is_some() { "poll" } else { "events" },
        rescan_ms = rescan.as_millis() as u64,
        "watching"
    );
    Ok((events, rescan))
}

/// What the daemon did, logged as it stops.
fn log_stopped(summary: &Summary) {
    tracing::info!(
        ingested = summary.ingested,
        duplicate = summary.duplicate,
        quarantined = summary.quarantined,
        released = summary.released,
        left = summary.left,
        unplaced = summary.unplaced,
        records = summary.records,
        rejected_records = summary.rejected_records,
        duplicate_records = summary.duplicate_records,
        updated_records = summary.updated_records,
        "stopped"
    );
}

/// A fresh claim identity, recovery of `processing/`, and a running pipeline fed the
/// recovered files.
fn start_pipeline(cfg: &Config, incoming: &Path) -> Result<(Arc<Session>, Pipeline)> {
    let session = Arc::new(Session::new(
        cfg.clone(),
        Mode::Move,
        incoming.to_path_buf(),
    )?);
    let (pipeline, _, _) = Pipeline::start_after_recovery(session.clone())?;
    Ok((session, pipeline))
}

/// Sleeps up to `d`; true if a stop was asked for meanwhile.
fn sleep_unless(stop: &Shutdown, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.is_triggered() {
            return true;
        }
        std::thread::sleep(TURN.min(until.saturating_duration_since(Instant::now())));
    }
    stop.is_triggered()
}

/// The discovery loop of one pipeline: until a stop is asked for, the pipeline halts, or a
/// SIGHUP asks for the config to be read again.
fn discover_until_stopped(
    disc: &mut Discovery,
    cfg: &Config,
    events: &mut Events,
    (pipeline, session): (&Pipeline, &Session),
    stop: &Shutdown,
) {
    let rescan = disc.rescan;
    let incoming = &cfg.spool.incoming;
    let mut last_scan: Option<Instant> = None;
    let mut last_full: Option<Instant> = None;
    let mut settling = false;
    let mut missing = false;
    // How often claims of other processes are looked at for a dead owner: with a store shared
    // by hosts, every third of a lease (another host may have died); else at full rescans.
    let owners_every = match &cfg.store {
        crate::store::Location::Postgres(t) => t.lease / 3,
        crate::store::Location::Sqlite(_) => rescan,
    };
    let mut owners_checked = Instant::now();
    while !stop.is_triggered() && !session.halted() && !shutdown::reload_requested() {
        let now = Instant::now();
        let next_full =
            last_full.map_or(now, |t| t + if missing { MISSING_RECHECK } else { rescan });
        let wait = if settling {
            RECHECK
        } else {
            next_full.saturating_duration_since(now)
        };
        let hinted = events.wait(wait.min(TURN), &mut disc.readiness);
        counters()
            .queue_depth
            .store(pipeline.queued() as u64, Ordering::Relaxed);
        let now = Instant::now();
        // The watched folder itself went away: look for it now rather than at the next rescan.
        let full = now >= next_full || events.root_gone;
        let recheck = settling && last_scan.is_none_or(|t| now >= t + RECHECK);
        if !(hinted || full || recheck) {
            continue;
        }
        last_scan = Some(now);
        if full && last_full.is_some() && session.has_unplaced() {
            // Committed files wait in processing/ for their move (the disk was full, say):
            // a fresh pipeline's recovery places them. Tried again at every full rescan.
            tracing::warn!("restarting the pipeline to place files left in processing/");
            return;
        }
        if now >= owners_checked + owners_every {
            owners_checked = now;
            if dead_owner_claims(session) {
                tracing::warn!(
                    "a process that held files in processing/ is gone; restarting the pipeline \
                     to take them over"
                );
                session.mark_leftovers();
                return;
            }
        }
        if full {
            last_full = Some(now);
            // The folder may have vanished (an unmounted share) and come back as a new folder.
            match events.ensure(incoming) {
                Ok(present) => {
                    if !present && !missing {
                        tracing::error!(incoming = %incoming.display(), "the incoming folder is gone; looking for it every second");
                    } else if present && missing {
                        tracing::warn!(incoming = %incoming.display(), "the incoming folder is back");
                    }
                    missing = !present;
                }
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "cannot watch the incoming folder; relying on rescans"
                ),
            }
        }
        match disc.scan_and_submit(cfg, (pipeline, session), stop, full) {
            Some(s) => settling = s,
            None => return,
        }
    }
}

/// Whether `processing/` holds claims of a dead process (a crashed `ferry run`, a host that
/// died or lost its network).
fn dead_owner_claims(session: &Session) -> bool {
    let Some(me) = session.owner.as_ref() else {
        return false;
    };
    let owners = match crate::spool::claim_owners(&session.cfg.spool, me) {
        Ok(o) if !o.is_empty() => o,
        Ok(_) => return false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look into processing/");
            return false;
        }
    };
    session.liveness.any_dead(&owners).unwrap_or_else(|e| {
        tracing::warn!(
            error = format!("{e:#}"),
            "cannot check whether other processes are alive"
        );
        false
    })
}

struct Discovery {
    readiness: Readiness,
    /// Files handed to the pipeline, with their stamp and when: not handed over again unless
    /// they change, or a full rescan finds them still there (a file that could not be read is
    /// left in place and tried again). A claim removes a file from the folder, so this stays
    /// small.
    submitted: HashMap<PathBuf, (Stamp, Instant)>,
    rescan: Duration,
    /// Files not ready, and since when this daemon has seen them so (the age of the oldest is
    /// a gauge: a partner that never sends its done marker shows up).
    waiting_since: HashMap<PathBuf, Instant>,
}

impl Discovery {
    /// Scans the incoming folder and submits what is ready. Returns whether some files are still
    /// settling, or `None` if the pipeline has stopped or a stop was asked for.
    fn scan_and_submit(
        &mut self,
        cfg: &Config,
        (pipeline, session): (&Pipeline, &Session),
        stop: &Shutdown,
        full: bool,
    ) -> Option<bool> {
        let scan = discover::scan(&cfg.spool.incoming, &cfg.rules, &cfg.spool.internal_dirs());
        if full {
            for (path, e) in &scan.errors {
                tracing::warn!(path = %path.display(), error = %e, "cannot look into this path");
            }
        }
        let present: std::collections::HashSet<PathBuf> =
            scan.entries.iter().map(|e| e.path.clone()).collect();
        let (now, wall) = (Instant::now(), SystemTime::now());
        let stale = self.rescan;
        self.submitted.retain(|p, (_, at)| {
            present.contains(p) && !(full && now.saturating_duration_since(*at) >= stale)
        });
        self.readiness.retain(|p| present.contains(p));
        let mut settling = false;
        let mut waiting = Vec::new();
        let halted = || stop.is_triggered() || session.halted();
        for e in scan.entries {
            if self.submitted.get(&e.path).map(|s| s.0) == Some(e.stamp) {
                continue;
            }
            if cfg.hold(&e.rel).is_some() {
                waiting.push(e.path);
                continue;
            }
            match self.readiness.check(&cfg.rules, &e, now, wall) {
                Ok(()) => {
                    if halted() {
                        return None;
                    }
                    self.submitted
                        .insert(e.path.clone(), (e.stamp, Instant::now()));
                    if !pipeline.submit_unless(Work::Fresh(e), halted) {
                        return None;
                    }
                }
                Err(discover::Hold::Settling { .. }) => {
                    settling = true;
                    waiting.push(e.path);
                }
                Err(discover::Hold::Hidden | discover::Hold::IsMarker) => {}
                Err(_) => waiting.push(e.path),
            }
        }
        self.count_waiting(waiting, now);
        Some(settling)
    }

    /// The waiting gauges: how many files are not ready, and for how long the oldest has been.
    fn count_waiting(&mut self, waiting: Vec<PathBuf>, now: Instant) {
        let c = counters();
        c.waiting.store(waiting.len() as u64, Ordering::Relaxed);
        let mut since = HashMap::with_capacity(waiting.len());
        for p in waiting {
            let first = self.waiting_since.get(&p).copied().unwrap_or(now);
            since.insert(p, first);
        }
        let oldest = since
            .values()
            .map(|t| now.saturating_duration_since(*t))
            .max();
        c.oldest_waiting_ms.store(
            oldest.map_or(0, |d| d.as_millis() as u64),
            Ordering::Relaxed,
        );
        self.waiting_since = since;
    }
}
