//! `ferry run [DIR] [--keep]`: process what is ready once, then exit (cron, CI, backfills).
//!
//! Reconciles `processing/` first (files left by a crashed run), then scans the folder once.
//! Files still changing are looked at again until they settle, for at most a few quiet
//! periods; whatever is still not ready then is reported as waiting and left for the next run.

use super::Outcome;
use crate::cli::RunArgs;
use crate::config::{Config, ConfigError};
use crate::discover::{self, Entry, Hold, Readiness, Stamp};
use crate::pipeline::{place, Ctx, Mode, Pipeline, Work};
use crate::report::{self, Waiting};
use anyhow::Result;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub fn run(cfg: &Config, args: &RunArgs) -> Result<Outcome> {
    let started = Instant::now();
    let source = match &args.dir {
        Some(d) => absolute(d),
        None => cfg.spool.incoming.clone(),
    };
    let mode = if args.keep { Mode::Keep } else { Mode::Move };
    if args.dir.is_some() && !source.is_dir() {
        return Err(ConfigError(format!("{} is not a folder", source.display())).into());
    }
    if mode == Mode::Move {
        std::fs::create_dir_all(&cfg.spool.root)?;
        std::fs::create_dir_all(&source)?;
        let (a, b) = (
            std::fs::metadata(&source)?.dev(),
            std::fs::metadata(&cfg.spool.root)?.dev(),
        );
        if a != b {
            return Err(ConfigError(format!(
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
    for (path, e) in &scan.errors {
        tracing::error!(path = %path.display(), error = %e, "cannot look into this path");
    }
    let entries: Vec<Entry> = scan
        .entries
        .into_iter()
        .filter(|e| !inside_spool(cfg, &e.path))
        .collect();
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
    let pipeline = Pipeline::start(ctx.clone())?;
    for w in recovered {
        pipeline.submit(w);
    }
    let waiting = feed_when_ready(cfg, &pipeline, entries);
    let summary = pipeline.finish();
    if let Some(pb) = &ctx.progress {
        pb.finish_and_clear();
    }
    let summary = summary?;

    let mut waiting: Vec<Waiting> = waiting
        .into_iter()
        .map(|(e, h)| Waiting::new(e.rel.display(), &h))
        .collect();
    waiting.extend(
        scan.ignored
            .iter()
            .filter(|(_, h)| *h != Hold::IsMarker)
            .map(|(rel, h)| Waiting::new(rel.display(), h)),
    );
    report(&source, started, summary, waiting, args.json)
}

/// Prints what a pipeline run did; the outcome says whether anything was quarantined.
pub fn report(
    source: &Path,
    started: Instant,
    summary: crate::events::Summary,
    waiting: Vec<Waiting>,
    json: bool,
) -> Result<Outcome> {
    let report = report::RunReport {
        source: source.display().to_string(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        summary,
        waiting,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(if report.summary.quarantined > 0 {
        Outcome::Quarantined
    } else {
        Outcome::Done
    })
}

/// Submits entries as they become ready. Files still settling are looked at again until they
/// are quiet; returns those still not ready when the wait is over.
fn feed_when_ready(
    cfg: &Config,
    pipeline: &Pipeline,
    mut pending: Vec<Entry>,
) -> Vec<(Entry, Hold)> {
    let max_wait = (cfg.rules.settle * 3).max(Duration::from_secs(2));
    let deadline = Instant::now() + max_wait;
    let mut readiness = Readiness::default();
    loop {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut held = Vec::new();
        for e in pending.drain(..) {
            match readiness.check(&cfg.rules, &e, now, wall) {
                Ok(()) => {
                    if !pipeline.submit(Work::Fresh(e)) {
                        return Vec::new();
                    }
                }
                Err(h) => held.push((e, h)),
            }
        }
        let settling = held.iter().any(|(_, h)| matches!(h, Hold::Settling { .. }));
        if !settling || Instant::now() >= deadline {
            return held;
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
