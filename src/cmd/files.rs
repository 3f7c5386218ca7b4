//! `ferry files [--state S] [--dataset D] [--limit N] [--since WHEN] [--json]`: the ledger, one row per file
//! (and per attempt).

use super::Outcome;
use crate::cli::{FilesArgs, StateArg};
use crate::config::Config;
use crate::report::{self, FilesReport};
use crate::store::{self, FileFilter, FileState};
use anyhow::Result;

pub fn run(cfg: &Config, args: &FilesArgs) -> Result<Outcome> {
    let filter = FileFilter {
        state: args.state.map(|s| match s {
            StateArg::Ingested => FileState::Ingested,
            StateArg::Duplicate => FileState::Duplicate,
            StateArg::Quarantined => FileState::Quarantined,
        }),
        dataset: args.dataset.clone(),
        limit: args.limit,
        since: args.since.clone(),
        ..FileFilter::default()
    };
    let rows = match store::open_existing(&cfg.store)? {
        Some(mut s) => s.files(&filter)?,
        None => Vec::new(),
    };
    report::print(&FilesReport(rows), args.json)?;
    Ok(Outcome::Done)
}
