//! `ferry run [DIR | FILE…] [--keep]`: process what is ready once, then exit (cron, CI,
//! backfills).
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
use crate::pipeline::{Mode, Pipeline, Session, Work};
use crate::report::{Progress, Waiting};
use crate::shutdown::{self, Shutdown};
use anyhow::Result;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How many times a run starts over after losing a transaction to another writer.
const TRANSIENT_RETRIES: u32 = 5;

pub fn run(cfg: &Config, args: &RunArgs) -> Result<Outcome> {
    let started = Instant::now();
    shutdown::install_signal_handlers();
    let stop = Shutdown::new();
    let (source, files, mode) = source(cfg, args)?;
    if let Some(name) = &args.source {
        if !cfg.sources.iter().any(|s| s.name == *name) {
            return Err(ExitError::Usage(format!(
                "there is no [[source]] named {name:?} in the config"
            ))
            .into());
        }
    }
    if !args.dry_run {
        crate::notify::open_channels(cfg)?;
    }
    let mut summary = Summary::default();
    let mut retries = 0;
    loop {
        let (pass, result) = pass(cfg, args, (&source, &files), mode, &stop)?;
        summary.absorb(pass.summary);
        match result {
            Err(e) if crate::store::is_transient(&e) && retries < TRANSIENT_RETRIES => {
                // Another writer won (a deadlock broken by the database, say): nothing of the
                // lost transaction happened. Start over: recovery takes its files back.
                retries += 1;
                tracing::warn!(error = format!("{e:#}"), retry = retries, "starting over");
                std::thread::sleep(std::time::Duration::from_millis(200 * retries as u64));
            }
            Err(e) => return Err(e),
            Ok(()) => {
                if !pass.refused.is_empty() {
                    // A host key or login refused: nothing more will work until someone looks.
                    super::report_run(
                        &source,
                        started,
                        summary,
                        pass.waiting,
                        None,
                        args.json,
                        args.dry_run,
                    )?;
                    return Err(ExitError::Usage(pass.refused.join("\n")).into());
                }
                // Receipts and webhooks of what finished, once the files are in (a place
                // that is down leaves them owed; it never changes the run's outcome).
                if !args.dry_run && !stop.is_triggered() {
                    crate::notify::after_run(cfg, &stop);
                }
                let interrupted = stop.is_triggered().then_some(pass.untaken);
                let outcome = super::report_run(
                    &source,
                    started,
                    summary,
                    pass.waiting,
                    interrupted,
                    args.json,
                    args.dry_run,
                )?;
                if let Some(path) = &args.metrics_file {
                    write_metrics(cfg, path, started, outcome)?;
                }
                return Ok(outcome);
            }
        }
    }
}

/// `--metrics-file`: what this run did as Prometheus text, for node-exporter's textfile
/// collector, written atomically (a scrape never reads half a file). Each dataset's last
/// success comes from the ledger, so a silent feed shows across runs.
fn write_metrics(cfg: &Config, path: &Path, started: Instant, outcome: Outcome) -> Result<()> {
    if let Ok(Some(mut s)) = crate::store::open_existing(&cfg.store) {
        if let Ok(last) = s.last_success() {
            crate::events::counters().seed_last_success(&last);
        }
    }
    let text = crate::metrics::render_run(started.elapsed(), outcome.code());
    crate::fsio::write_atomic(path, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("--metrics-file: {e}"))?;
    Ok(())
}

/// What one pass over the source folder did.
struct Pass {
    summary: Summary,
    waiting: Vec<Waiting>,
    untaken: u64,
    /// Sources refused (host key, login): the run exits 2.
    refused: Vec<String>,
}

/// One pass: a fresh claim identity, recovery, one look at the folder (or at the named files
/// in it), everything ready fed to the pipeline. Returns what was committed even when the
/// writer stopped on an error.
fn pass(
    cfg: &Config,
    args: &RunArgs,
    (source, files): (&Path, &[PathBuf]),
    mode: Mode,
    stop: &Shutdown,
) -> Result<(Pass, Result<()>)> {
    let mut session = Session::new(cfg.clone(), mode, source.to_path_buf())?;
    session.list_files = true;
    let session = Arc::new(session);
    let mut summary = Summary {
        list_files: true,
        ..Summary::default()
    };
    // With --source, only that source; remote sources are pulled only into the spool's own
    // incoming folder (not with --keep, --dry-run or named paths).
    let found = if args.source.is_some() {
        Found {
            entries: Vec::new(),
            waiting: Vec::new(),
        }
    } else {
        look(cfg, source, files, &mut summary)
    };
    let pulls = mode == Mode::Move && files.is_empty() && source == cfg.spool.incoming;
    // A dry run leaves processing/ to the next real run.
    let (pipeline, n) = if mode == Mode::DryRun {
        (Pipeline::start(session.clone())?, 0)
    } else {
        let (pipeline, recovered, n) = Pipeline::start_after_recovery(session.clone())?;
        summary.absorb(recovered);
        (pipeline, n)
    };
    let show_progress =
        !args.json && !args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bytes = found.entries.iter().map(|e| e.stamp.size).sum();
    let progress = show_progress.then(|| Progress::start((found.entries.len() + n) as u64, bytes));
    let (held, untaken) = feed_when_ready(cfg, &pipeline, found.entries, stop);
    let pulled = if pulls {
        crate::remote::pull::tidy(cfg, &session);
        crate::remote::pull::pull(
            &session,
            &pipeline,
            stop,
            args.source.as_deref(),
            &mut summary,
        )?
    } else {
        crate::remote::pull::Pull::default()
    };
    if stop.is_triggered() {
        session.halt();
    }
    let (done, result) = pipeline.finish_keeping();
    if let Err(e) = crate::remote::after::finish(&session, &pulled) {
        tracing::error!(
            error = format!("{e:#}"),
            "cannot record what became of pulled files"
        );
    }
    if let Some(p) = progress {
        p.finish();
    }
    summary.absorb(done);
    let mut waiting = found.waiting;
    if mode == Mode::DryRun && files.is_empty() && source == cfg.spool.incoming {
        // A dry run downloads nothing: what each source holds is listed and judged as a pull
        // would (`pull::survey`), and shown as waiting for the run.
        waiting.extend(remote_dry_run(cfg));
    }
    waiting.extend(
        held.into_iter()
            .map(|(e, h)| Waiting::new(e.rel.display(), &h)),
    );
    waiting.extend(pulled.held.iter().map(|(p, h)| Waiting::new(p.clone(), h)));
    let pass = Pass {
        summary,
        waiting,
        untaken,
        refused: pulled.refused,
    };
    Ok((pass, result))
}

/// What a pull of each source would fetch, and what it could not, for `run --dry-run`.
fn remote_dry_run(cfg: &Config) -> Vec<Waiting> {
    let mut out = Vec::new();
    let mut store = crate::store::open_existing(&cfg.store).ok().flatten();
    for spec in &cfg.sources {
        match crate::remote::pull::survey(cfg, spec, store.as_mut()) {
            Ok(s) => {
                out.extend(s.ready.into_iter().map(|p| Waiting {
                    path: format!("{}/{p}", spec.into),
                    rule: "remote",
                    reason: format!(
                        "on source {}: a run downloads it and judges it here",
                        spec.name
                    ),
                }));
                out.extend(s.held.iter().map(|(p, h)| Waiting::new(p.clone(), h)));
                out.extend(s.problems.into_iter().map(|(p, why)| Waiting {
                    path: format!("{}:{p}", spec.name),
                    rule: "remote.not_fetched",
                    reason: why,
                }));
            }
            Err(e) => out.push(Waiting {
                path: spec.name.clone(),
                rule: "remote.unreachable",
                reason: format!("{e:#}"),
            }),
        }
    }
    out
}

/// Where files are taken from (a folder, and the named files in it if any) and how (moved
/// through the spool, or read in place), checked: a folder that exists, on the spool's
/// filesystem when files are to be claimed by rename. Creates the spool where that is expected.
fn source(cfg: &Config, args: &RunArgs) -> Result<(PathBuf, Vec<PathBuf>, Mode)> {
    let (source, files) = named(cfg, &args.paths)?;
    let mode = match (args.keep, args.dry_run) {
        (_, true) => Mode::DryRun,
        (true, _) => Mode::Keep,
        _ => Mode::Move,
    };
    for w in &cfg.warnings {
        tracing::warn!("config: {w}");
    }
    if mode == Mode::DryRun {
        // Nothing is created, not even the spool.
        if cfg.root_named && !cfg.spool.exists() {
            return Err(ExitError::Usage(format!(
                "there is no ferry spool at {} (no ferry.db, no incoming/); check --root",
                cfg.spool.root.display()
            ))
            .into());
        }
        if !source.is_dir() {
            return Err(ExitError::Usage(format!("{} is not a folder", source.display())).into());
        }
        return Ok((source, files, mode));
    }
    super::open_or_create_spool(cfg, args.init)?;
    let outside = !absolute(&source).starts_with(absolute(&cfg.spool.incoming));
    if mode == Mode::Move && outside && !args.move_in {
        return Err(ExitError::Usage(format!(
            "{} is outside the spool: --keep reads its files in place (nothing there changes), \
             --move takes them into the spool (they leave {})",
            args.paths.first().unwrap_or(&source).display(),
            source.display()
        ))
        .into());
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
    Ok((source, files, mode))
}

/// The folder to look into and the files (or one folder) named in it: the incoming folder; a
/// folder inside it, judged by paths under incoming/ as a scan would judge them; another folder
/// named; or files, all from one folder — the incoming folder for files under it, else the
/// folder above the one each file is in (so that folder names the dataset, as it would in
/// incoming/). The spool root, a folder above incoming/ and ferry's own folders are refused.
pub(super) fn named(cfg: &Config, paths: &[PathBuf]) -> Result<(PathBuf, Vec<PathBuf>)> {
    let usage = |m: String| -> anyhow::Error { ExitError::Usage(m).into() };
    let incoming = absolute(&cfg.spool.incoming);
    match paths {
        [] => return Ok((cfg.spool.incoming.clone(), Vec::new())),
        [one] if absolute(one).is_dir() => {
            let dir = absolute(one);
            if dir == incoming {
                return Ok((cfg.spool.incoming.clone(), Vec::new()));
            }
            if dir.starts_with(&incoming) {
                return Ok((incoming, vec![dir]));
            }
            if incoming.starts_with(&dir) {
                return Err(usage(format!(
                    "{} holds the spool's incoming folder {}: name that folder or one inside it \
                     (or nothing, which means incoming/)",
                    one.display(),
                    cfg.spool.incoming.display()
                )));
            }
            if inside_spool(cfg, &dir) || dir == absolute(&cfg.spool.root) {
                return Err(usage(format!(
                    "{} is one of ferry's own folders; to load a file again, copy it into {}",
                    one.display(),
                    cfg.spool.incoming.display()
                )));
            }
            return Ok((dir, Vec::new()));
        }
        _ => {}
    }
    let mut source: Option<PathBuf> = None;
    let mut files = Vec::with_capacity(paths.len());
    for p in paths {
        // The file itself as named (a symlink is judged as one), in a canonical folder.
        let name = p
            .file_name()
            .ok_or_else(|| usage(format!("{} is not a file", p.display())))?;
        let file = absolute(p.parent().unwrap_or(Path::new("."))).join(name);
        match file.symlink_metadata() {
            Err(e) => return Err(usage(format!("{}: {e}", p.display()))),
            Ok(m) if m.is_dir() => {
                return Err(usage(format!(
                    "{} is a folder: name one folder, or files",
                    p.display()
                )))
            }
            Ok(_) => {}
        }
        if inside_spool(cfg, &file) && !file.starts_with(&incoming) {
            return Err(usage(format!(
                "{} is one of ferry's own files; to load it again, copy it into {}",
                p.display(),
                cfg.spool.incoming.display()
            )));
        }
        let dir = if file.starts_with(&incoming) {
            incoming.clone()
        } else {
            let folder = file.parent().expect("a file has a folder");
            folder.parent().unwrap_or(folder).to_path_buf()
        };
        match &source {
            Some(s) if *s != dir => {
                return Err(usage(format!(
                    "{} and {} are not from one folder: run them one folder at a time",
                    paths[0].display(),
                    p.display()
                )))
            }
            _ => source = Some(dir),
        }
        files.push(file);
    }
    Ok((source.expect("at least one file"), files))
}

/// What one look at the source folder found.
struct Found {
    /// Files to judge and take.
    entries: Vec<Entry>,
    /// Files held back by name or config, with the rule.
    waiting: Vec<Waiting>,
}

/// Scans the source folder once (or looks at the named files); paths that cannot be looked
/// into are left, and said.
fn look(cfg: &Config, source: &Path, files: &[PathBuf], summary: &mut Summary) -> Found {
    let scan = match files {
        [] => discover::scan(source, &cfg.rules, &cfg.spool.internal_dirs()),
        [dir] if dir.is_dir() => {
            discover::scan_under(source, dir, &cfg.rules, &cfg.spool.internal_dirs())
        }
        files => discover::pick(source, files, &cfg.rules),
    };
    for (path, e) in &scan.errors {
        Event::Left {
            path: &path.display().to_string(),
            why: &format!("cannot look into {}: {e}", path.display()),
        }
        .emit(summary);
    }
    let mut found = Found {
        entries: Vec::new(),
        waiting: Vec::new(),
    };
    for e in scan.entries {
        if inside_spool(cfg, &e.path) {
            continue;
        }
        match cfg.hold(&e.rel) {
            Some(h) => found.waiting.push(Waiting::new(e.rel.display(), &h)),
            None => found.entries.push(e),
        }
    }
    found.waiting.extend(
        scan.ignored
            .iter()
            .filter(|(_, h)| *h != Hold::IsMarker)
            .map(|(rel, h)| Waiting::new(rel.display(), h)),
    );
    found
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
