//! `ferry files [--state S] [--dataset D] [--limit N] [--json]`: the ledger, one row per file
//! (and per attempt).

use super::Outcome;
use crate::cli::{FilesArgs, StateArg};
use crate::config::Config;
use crate::ledger::{FileFilter, Ledger, State};
use crate::report;
use anyhow::Result;

pub fn run(cfg: &Config, args: &FilesArgs) -> Result<Outcome> {
    let filter = FileFilter {
        state: args.state.map(|s| match s {
            StateArg::Ingested => State::Ingested,
            StateArg::Duplicate => State::Duplicate,
            StateArg::Quarantined => State::Quarantined,
        }),
        dataset: args.dataset.clone(),
        limit: args.limit,
        latest: false,
    };
    let rows = match Ledger::open_existing(&cfg.spool.db)? {
        Some(l) => l.files(&filter)?,
        None => Vec::new(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", report::files_table(&rows));
    }
    Ok(Outcome::Done)
}
