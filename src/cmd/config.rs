//! `ferry config check`: validates the config (loading it already did) and shows the datasets
//! as ferry resolved them, each with the table it has or will get. Opening the store checks
//! that it can be reached (a PostgreSQL connection failure is the command's error).

use super::Outcome;
use crate::cli::ConfigCommand;
use crate::config::Config;
use crate::report::{self, ConfigView};
use crate::store::{self, names};
use anyhow::Result;

pub fn run(cfg: &Config, cmd: &ConfigCommand) -> Result<Outcome> {
    let ConfigCommand::Check { json, .. } = cmd;
    let mut st = store::open_existing(&cfg.store)?;
    let mut tables = Vec::with_capacity(cfg.datasets.len());
    for d in &cfg.datasets {
        tables.push(match st.as_deref_mut() {
            Some(s) => s.table_or_planned(&d.name)?,
            None => (names::table_name_for(&d.name, names::reserved_table), false),
        });
    }
    report::print(&ConfigView::of(cfg, tables, st.is_some()), *json)?;
    Ok(Outcome::Done)
}
