//! `ferry export DATASET [--to DIR] [--format csv|ndjson] [--gzip] [--max-rows N] [--target NAME]`
//! and `ferry export --list`. The protocol lives in `crate::export`; this is the command's shape.

use super::Outcome;
use crate::cli::ExportArgs;
use crate::config::Config;
use crate::export::{self, Request};
use crate::fsio;
use crate::report::{self, ExportReport, TargetsReport};
use crate::store;
use anyhow::Result;

pub fn run(cfg: &Config, args: &ExportArgs) -> Result<Outcome> {
    if args.list {
        let targets = match store::open_existing(&cfg.store)? {
            Some(mut s) => s.targets()?,
            None => Vec::new(),
        };
        report::print(&TargetsReport(targets), args.json)?;
        return Ok(Outcome::Done);
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
        .map_err(|e| fsio::with_path(e, "cannot create the target folder", &dir))?;
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
    let mut store = store::open(&cfg.store)?;
    let summary = export::export(&cfg.spool, &mut *store, &req)?;
    report::print(&ExportReport(summary), args.json)?;
    Ok(Outcome::Done)
}
