//! `ferry quarantine list | show ID | retry ID… | --all` (R-replay).
//!
//! A retry moves the quarantined file back into `processing/` under a fresh claim and sends it
//! through the same pipeline as `ferry run`, under the config as it is now. The ledger keeps every
//! attempt: the new row has `retry_of` pointing at the quarantined one and `attempt` one higher,
//! so `ferry files` shows the history. The old reason file is removed once the file is claimed;
//! the ledger row still holds the reason.

use super::Outcome;
use crate::cli::{QuarantineCommand, RetryArgs};
use crate::config::{Config, ConfigError};
use crate::ledger::{FileFilter, FileRow, Ledger, State};
use crate::pipeline::place::reason_path;
use crate::pipeline::stages::FIRST_REJECTS;
use crate::pipeline::{Ctx, Mode, Pipeline, Work};
use crate::reject::RecordReject;
use crate::report::files_table;
use crate::spool::RelPath;
use anyhow::Result;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

pub fn run(cfg: &Config, cmd: &QuarantineCommand) -> Result<Outcome> {
    match cmd {
        QuarantineCommand::List { json } => list(cfg, *json),
        QuarantineCommand::Show { id, json } => show(cfg, *id, *json),
        QuarantineCommand::Retry(a) => retry(cfg, a),
    }
}

/// Quarantined rows not yet retried, oldest first.
fn open_rows(ledger: &Ledger) -> Result<Vec<FileRow>> {
    ledger.files(&FileFilter {
        state: Some(State::Quarantined),
        latest: true,
        ..FileFilter::default()
    })
}

fn list(cfg: &Config, json: bool) -> Result<Outcome> {
    let rows = match Ledger::open_existing(&cfg.spool.db)? {
        Some(l) => open_rows(&l)?,
        None => Vec::new(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("quarantine is empty");
    } else {
        print!("{}", files_table(&rows));
        for r in &rows {
            println!(
                "  {}: {}",
                r.id,
                r.error_message.as_deref().unwrap_or("(no message)")
            );
        }
    }
    Ok(Outcome::Done)
}

#[derive(Serialize)]
struct Shown {
    file: FileRow,
    rejects: Vec<RecordReject>,
    /// Every attempt of this file, oldest first (this one included).
    attempts: Vec<FileRow>,
    retried_by: Option<i64>,
}

fn show(cfg: &Config, id: i64, json: bool) -> Result<Outcome> {
    let ledger = Ledger::open_existing(&cfg.spool.db)?
        .ok_or_else(|| ConfigError(format!("no ledger at {}", cfg.spool.db.display())))?;
    let file = ledger
        .get(id)?
        .ok_or_else(|| ConfigError(format!("no file with id {id} in the ledger")))?;
    // Walk back to the first attempt, then forward through the retries.
    let mut first = file.clone();
    while let Some(prev) = first.retry_of.and_then(|p| ledger.get(p).ok().flatten()) {
        first = prev;
    }
    let mut attempts = vec![first.clone()];
    while let Some(next) = ledger.retried_by(attempts.last().expect("non-empty").id)? {
        match ledger.get(next)? {
            Some(r) => attempts.push(r),
            None => break,
        }
    }
    let shown = Shown {
        rejects: ledger.rejects(id, Some(FIRST_REJECTS as u64))?,
        retried_by: ledger.retried_by(id)?,
        attempts,
        file,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(Outcome::Done);
    }
    let f = &shown.file;
    println!("file {}  {}", f.id, f.path);
    println!("  state      {}", f.state);
    println!("  dataset    {}", f.dataset.as_deref().unwrap_or("-"));
    println!("  sha256     {}", f.sha256.as_deref().unwrap_or("-"));
    println!("  size       {} bytes", f.size);
    if let Some(k) = &f.error_kind {
        println!(
            "  error      {k} (stage {})",
            f.error_stage.as_deref().unwrap_or("-")
        );
        println!("  message    {}", f.error_message.as_deref().unwrap_or(""));
        if let Some(l) = f.error_line {
            println!("  line       {l}");
        }
        if let Some(fl) = &f.error_field {
            println!("  field      {fl}");
        }
    }
    println!("  stored at  {}", f.stored_at.as_deref().unwrap_or("-"));
    println!("  attempt    {}", f.attempt);
    if !shown.rejects.is_empty() {
        println!("  rejected records:");
        for r in &shown.rejects {
            println!(
                "    line {:>6}  {:<16} {:<24} {}",
                r.line,
                r.field.as_deref().unwrap_or("-"),
                r.value.as_deref().map_or("-".into(), |v| format!("{v:?}")),
                r.reason
            );
        }
    }
    if shown.attempts.len() > 1 {
        println!("  attempts:");
        for a in &shown.attempts {
            println!(
                "    {:>6}  {:<11}  {}  {}",
                a.id,
                a.state,
                a.finished_at,
                a.error_kind.as_deref().unwrap_or("")
            );
        }
    }
    if let Some(r) = shown.retried_by {
        println!("  retried as {r}");
    }
    Ok(Outcome::Done)
}

fn retry(cfg: &Config, args: &RetryArgs) -> Result<Outcome> {
    let started = Instant::now();
    let ledger = Ledger::open_existing(&cfg.spool.db)?
        .ok_or_else(|| ConfigError(format!("no ledger at {}", cfg.spool.db.display())))?;
    let rows = if args.all {
        open_rows(&ledger)?
    } else {
        let mut rows = Vec::new();
        for &id in &args.ids {
            let row = ledger
                .get(id)?
                .ok_or_else(|| ConfigError(format!("no file with id {id} in the ledger")))?;
            if row.state != State::Quarantined.id() {
                return Err(ConfigError(format!(
                    "file {id} ({}) is {}, not quarantined",
                    row.path, row.state
                ))
                .into());
            }
            if let Some(by) = ledger.retried_by(id)? {
                return Err(ConfigError(format!(
                    "file {id} ({}) was already retried as {by}; retry that one",
                    row.path
                ))
                .into());
            }
            rows.push(row);
        }
        rows
    };
    drop(ledger);

    let ctx = Arc::new(Ctx::new(
        cfg.clone(),
        Mode::Move,
        cfg.spool.incoming.clone(),
    )?);
    let owner = ctx.owner.as_ref().expect("move mode has an owner");
    let mut work = Vec::new();
    for row in &rows {
        let Some(stored) = &row.stored_at else {
            tracing::error!(id = row.id, path = %row.path, "no quarantined file recorded; skipped");
            continue;
        };
        let at = cfg.spool.resolve(stored);
        let Some(rel) = RelPath::from_display(&row.path) else {
            tracing::error!(id = row.id, path = %row.path, "the recorded path is not relative; skipped");
            continue;
        };
        match owner.claim(&cfg.spool, &at, &rel) {
            Ok(Some(claim)) => {
                let _ = std::fs::remove_file(reason_path(&at));
                work.push(Work::Claimed {
                    claim,
                    attempt: row.attempt as u32 + 1,
                    retry_of: Some(row.id),
                });
            }
            Ok(None) => tracing::warn!(
                id = row.id,
                path = %at.display(),
                "the quarantined file is gone (retried by another process?); skipped"
            ),
            Err(e) => {
                tracing::error!(id = row.id, path = %at.display(), error = %e, "cannot take the file back; skipped")
            }
        }
    }
    let pipeline = Pipeline::start(ctx.clone())?;
    for w in work {
        if !pipeline.submit(w) {
            break;
        }
    }
    let summary = pipeline.finish()?;
    super::run::report(
        &cfg.spool.quarantine,
        started,
        summary,
        Vec::new(),
        None,
        args.json,
    )
}
