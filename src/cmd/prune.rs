//! `ferry prune [--dry-run] [--json]`: retention, as `[retention]` sets it (see `retention`).

use super::Outcome;
use crate::cli::PruneArgs;
use crate::config::Config;
use crate::report;
use crate::retention;
use anyhow::Result;

pub fn run(cfg: &Config, args: &PruneArgs) -> Result<Outcome> {
    crate::shutdown::install_signal_handlers();
    let stop = crate::shutdown::Shutdown::new();
    let pruned = retention::prune(cfg, args.dry_run, chrono::Utc::now(), &stop)?;
    report::print(&pruned, args.json)?;
    // A file due for removal that had to be left needs someone to look at it.
    Ok(if pruned.left.is_empty() {
        Outcome::Done
    } else {
        Outcome::Left
    })
}
