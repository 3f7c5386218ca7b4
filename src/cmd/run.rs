//! `ferry run [DIR] [--keep]`: process what is ready once, then exit (cron, CI, backfills).
//!
//! Reconciles `processing/` first (files left by a crashed run; those in flight at more than one
//! crash one at a time), then scans the folder once. Files still changing are looked at again
//! until they settle, for at most a few quiet periods; whatever is still not ready then is
//! reported as waiting and left for the next run. SIGINT/SIGTERM stop claiming; files in flight
//! are finished, the rest is left for the next run (exit 130).

use super::Outcome;
use crate::cli::RunArgs;
use crate::config::Config;
use crate::discover::{self, Entry, Hold, Readiness, Stamp};
use crate::events::{Event, Summary};
use crate::exit::ExitError;
use crate::pipeline::{place, Ctx, Mode, Pipeline, Work};
use crate::report::{self, Waiting};
use crate::shutdown::{self, Shutdown};
use anyhow::Result;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub fn run(cfg: &Config, args: &RunArgs) -> Result<Outcome> {
    let started = Instant::now();
    shutdown::install_signal_handlers();
    let stop = Shutdown::new();
    let source = match &args.dir {
        Some(d) => absolute(d),
        None => cfg.spool.incoming.clone(),
    };
    let mode = if args.keep { Mode::Keep } else { Mode::Move };
    if args.dir.is_some() && !source.is_dir() {
        return Err(ExitError::Usage(format!("{} is not a folder", source.display())).into());
    }
    super::prepare_spool(cfg, args.init)?;
    for w in &cfg.warnings {
        tracing::warn!("config: {w}");
    }
    if mode == Mode::Move {
        std::fs::create_dir_all(&source)?;
        let (a, b) = (
            std::fs::metadata(&source)?.dev(),
            std::fs::metadata(&cfg.spool.root)?.dev(),
        );
        if a != b {
            return Err(ExitError::Usage(format!(
                "{} is on another filesystem than the spool {}: files cannot be claimed by an \
                 atomic rename. Use --keep to read them in place, or move the spool.",
                source.display(),
                cfg.spool.root.display()
            ))
            .into());
        }
    }

    let mut ctx = Ctx::new(cfg.clone(), mode, source.clone())?;
    let show_progress =
        !args.json && !args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let scan = discover::scan(&source, &cfg.rules, &cfg.spool.internal_dirs());
    let mut summary = Summary::default();
    for (path, e) in &scan.errors {
        // A folder or file that cannot even be looked at is left, and said.
        Event::Left {
            path: &path.display().to_string(),
            why: &format!("cannot look into {}: {e}", path.display()),
        }
        .emit(&mut summary);
    }
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    for e in scan.entries {
        if inside_spool(cfg, &e.path) {
            continue;
        }
        match cfg.hold(&e.rel) {
            Some(h) => waiting.push(Waiting::new(e.rel.display(), &h)),
            None => entries.push(e),
        }
    }
    if show_progress {
        let pb = indicatif::ProgressBar::new(entries.len() as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos}/{len} files [{elapsed_precise}] {wide_bar} {eta}",
            )
            .expect("valid template"),
        );
        ctx.progress = Some(pb);
    }
    let ctx = Arc::new(ctx);
    let recovered = place::recover(&ctx)?;
    if let Some(pb) = &ctx.progress {
        pb.inc_length(recovered.len() as u64);
    }
    let (isolated, recovered) = place::isolate(recovered, cfg.max_attempts);
    for w in isolated {
        // In flight at more than one crash: alone, so a crash names it and nothing else.
        let pipeline = Pipeline::start(ctx.clone())?;
        pipeline.submit(w);
        summary.absorb(pipeline.finish()?);
    }
    let pipeline = Pipeline::start(ctx.clone())?;
    for w in recovered {
        pipeline.submit(w);
    }
    let (held, untaken) = feed_when_ready(cfg, &pipeline, entries, &stop);
    if stop.is_triggered() {
        ctx.halt();
    }
    let finished = pipeline.finish();
    if let Some(pb) = &ctx.progress {
        pb.finish_and_clear();
    }
    summary.absorb(finished?);

    waiting.extend(
        held.into_iter()
            .map(|(e, h)| Waiting::new(e.rel.display(), &h)),
    );
    waiting.extend(
        scan.ignored
            .iter()
            .filter(|(_, h)| *h != Hold::IsMarker)
            .map(|(rel, h)| Waiting::new(rel.display(), h)),
    );
    let interrupted = stop.is_triggered().then_some(untaken);
    report(&source, started, summary, waiting, interrupted, args.json)
}

/// Prints what a pipeline run did; the outcome says what needs attention.
pub fn report(
    source: &Path,
    started: Instant,
    summary: Summary,
    waiting: Vec<Waiting>,
    interrupted: Option<u64>,
    json: bool,
) -> Result<Outcome> {
    let report = report::RunReport {
        source: source.display().to_string(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        interrupted: interrupted.is_some(),
        not_taken: interrupted.unwrap_or(0),
        summary,
        waiting,
    };
    report::print(&report, json)?;
    let s = &report.summary;
    Ok(if report.interrupted {
        Outcome::Interrupted
    } else if s.left + s.unplaced > 0 {
        Outcome::Left
    } else if s.quarantined > 0 {
        Outcome::Quarantined
    } else {
        Outcome::Done
    })
}

/// Submits entries as they become ready. Files still settling are looked at again until they
/// are quiet. Returns those still not ready when the wait is over, and how many ready files
/// were not handed over because a stop was asked for.
fn feed_when_ready(
    cfg: &Config,
    pipeline: &Pipeline,
    mut pending: Vec<Entry>,
    stop: &Shutdown,
) -> (Vec<(Entry, Hold)>, u64) {
    let max_wait = (cfg.rules.settle * 3).max(Duration::from_secs(2));
    let deadline = Instant::now() + max_wait;
    let mut readiness = Readiness::default();
    loop {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut held = Vec::new();
        let mut untaken = 0;
        for e in pending.drain(..) {
            if stop.is_triggered() {
                untaken += 1;
                continue;
            }
            match readiness.check(&cfg.rules, &e, now, wall) {
                Ok(()) => {
                    if !pipeline.submit_unless(Work::Fresh(e), || stop.is_triggered()) {
                        untaken += 1;
                    }
                }
                Err(h) => held.push((e, h)),
            }
        }
        let settling = held.iter().any(|(_, h)| matches!(h, Hold::Settling { .. }));
        if !settling || Instant::now() >= deadline || stop.is_triggered() {
            return (held, untaken);
        }
        std::thread::sleep(Duration::from_millis(100));
        pending = held
            .into_iter()
            .filter_map(|(mut e, _)| {
                let meta = e.path.symlink_metadata().ok()?;
                e.stamp = Stamp::of(&meta);
                Some(e)
            })
            .collect();
    }
}

/// Whether a path is one of ferry's own files (when the folder given to `run` holds the spool).
fn inside_spool(cfg: &Config, p: &Path) -> bool {
    p.starts_with(&cfg.spool.root) && !p.starts_with(&cfg.spool.incoming)
}

fn absolute(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| p.to_path_buf(), |cwd| cwd.join(p))
    };
    abs.canonicalize().unwrap_or(abs)
}
