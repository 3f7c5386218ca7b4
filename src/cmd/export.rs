//! `ferry export DATASET [--to DIR] [--format csv|ndjson] [--gzip] [--max-rows N] [--target NAME]`
//! and `ferry export --list`. The protocol lives in `crate::export`; this is the command's shape.

use super::Outcome;
use crate::cli::ExportArgs;
use crate::config::Config;
use crate::export::{self, Busy, Request, TargetStatus};
use crate::ledger::Ledger;
use crate::report::thousands;
use anyhow::Result;
use std::fmt::Write;

pub fn run(cfg: &Config, args: &ExportArgs) -> Result<Outcome> {
    if args.list {
        return list(cfg, args.json);
    }
    let dataset = args
        .dataset
        .clone()
        .expect("clap requires a dataset unless --list");
    // A folder has one identity however it is written (`./a/../b`, a symlink, the absolute
    // path): the target's name defaults to it, so the same records are never exported twice
    // into one folder under two names.
    let dir = match &args.to {
        Some(d) => std::path::absolute(d)?,
        None => cfg.spool.outgoing.join(&dataset),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| crate::fsio::with_path(e, "cannot create the target folder", &dir))?;
    let dir = dir.canonicalize()?;
    let target = args
        .target
        .clone()
        .unwrap_or_else(|| dir.display().to_string());
    let req = Request {
        dataset,
        dir,
        target,
        format: args.format,
        gzip: args.gzip,
        max_rows: args.max_rows,
    };
    if !cfg.spool.db.exists() {
        return Err(crate::config::ConfigError(format!(
            "no ledger at {}: nothing has been ingested into this spool yet",
            cfg.spool.db.display()
        ))
        .into());
    }
    let summary = match export::export(&cfg.spool, &req) {
        Ok(s) => s,
        Err(e) if e.downcast_ref::<Busy>().is_some() => {
            eprintln!("ferry: {e}");
            return Ok(Outcome::Busy);
        }
        Err(e) => return Err(e),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ferry export: {} → {} (target {:?})",
            summary.dataset, summary.dir, summary.target
        );
        for b in &summary.batches {
            let _ = writeln!(
                out,
                "  {}  {:>10} records  ids {}–{}{}",
                b.file,
                thousands(b.rows),
                b.first_record_id,
                b.last_record_id,
                if b.resumed {
                    "  (rewritten: an earlier export was interrupted)"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(
            out,
            "  {} batches, {} records; watermark {}",
            summary.batches.len(),
            thousands(summary.rows),
            summary.watermark
        );
        print!("{out}");
    }
    Ok(Outcome::Done)
}

fn list(cfg: &Config, json: bool) -> Result<Outcome> {
    let targets = match Ledger::open_existing(&cfg.spool.db)? {
        Some(l) => export::targets(&l.conn)?,
        None => Vec::new(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&targets)?);
    } else {
        print!("{}", targets_table(&targets));
    }
    Ok(Outcome::Done)
}

/// The targets as a table (also part of `ferry status`).
pub fn targets_table(targets: &[TargetStatus]) -> String {
    let mut out = String::new();
    if targets.is_empty() {
        out.push_str("no export targets yet\n");
        return out;
    }
    let _ = writeln!(
        out,
        "  {:<12} {:>12} {:>12} {:>8} {:>12}  {:<24}  target",
        "dataset", "watermark", "pending", "batches", "exported", "last export"
    );
    for t in targets {
        let _ = writeln!(
            out,
            "  {:<12} {:>12} {:>12} {:>8} {:>12}  {:<24}  {}{}",
            t.dataset,
            t.watermark,
            thousands(t.pending_records),
            thousands(t.batches),
            thousands(t.exported_records),
            t.last_export.as_deref().unwrap_or("never"),
            t.target,
            match &t.interrupted_batch {
                Some(b) => format!("  (interrupted: {b})"),
                None => String::new(),
            }
        );
    }
    out
}
