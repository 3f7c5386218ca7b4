//! `ferry config check`: validates the config (loading it already did) and shows the datasets
//! as ferry resolved them, each with the table it has or will get. Opening the store checks
//! that it can be reached (a PostgreSQL connection failure is the command's error); every
//! source is listed and every export target reached.

use super::Outcome;
use crate::cli::ConfigCommand;
use crate::config::Config;
use crate::report::{self, ConfigView, SourceView, TableView, TargetView};
use crate::store::{self, names};
use anyhow::Result;

pub fn run(cfg: &Config, cmd: &ConfigCommand) -> Result<Outcome> {
    let ConfigCommand::Check { json, .. } = cmd;
    let mut st = store::open_existing(&cfg.store)?;
    let mut tables = Vec::with_capacity(cfg.datasets.len());
    let mut refused = Vec::new();
    for d in &cfg.datasets {
        let t = match st.as_deref_mut() {
            Some(s) => table_of(s, d)?,
            None => TableView::planned(
                d.table
                    .clone()
                    .unwrap_or_else(|| names::table_name_for(&d.name, names::reserved_table)),
                false,
                &d.name,
            ),
        };
        if let Some(why) = &t.refused {
            refused.push(format!("dataset {:?}: {why}", d.name));
        }
        tables.push(t);
    }
    // Each source is reached and listed as a pull would judge it (nothing downloaded).
    let mut sources = Vec::with_capacity(cfg.sources.len());
    for spec in &cfg.sources {
        let survey = crate::remote::pull::survey(cfg, spec, st.as_mut());
        if let Err(e) = &survey {
            refused.push(format!("source {:?}: {e:#}", spec.name));
        }
        sources.push(SourceView::of(spec, survey));
    }
    // OpenPGP keys are read and unlocked as a file would need them.
    for (whose, u) in cfg.unpack_settings() {
        if let Err(r) = crate::container::check_keys(&u) {
            refused.push(format!("{whose}: {}", r.message));
        }
    }
    // Each export target is reached the way an export reaches it (nothing written).
    let mut targets = Vec::with_capacity(cfg.targets.len());
    for spec in &cfg.targets {
        let reached = crate::remote::connect(spec).and_then(|mut p| p.check());
        if let Err(e) = &reached {
            refused.push(format!("target {:?}: {e:#}", spec.name));
        }
        targets.push(TargetView {
            name: spec.name.clone(),
            url: spec.url.clone(),
            reached: reached.is_ok(),
            error: reached.err().map(|e| format!("{e:#}")),
        });
    }
    report::print(
        &ConfigView::of(cfg, tables, (sources, targets), st.is_some()),
        *json,
    )?;
    if !refused.is_empty() {
        return Err(crate::exit::ExitError::Usage(refused.join("; ")).into());
    }
    Ok(Outcome::Done)
}

/// The table a dataset has or will get, as the writer would decide it (`names::named_table`).
fn table_of(s: &mut dyn store::Store, d: &crate::config::DatasetSpec) -> Result<TableView> {
    Ok(match names::named_table(s, d)? {
        Err(why) => TableView {
            table: d.table.clone().unwrap_or_default(),
            state: "refused",
            note: None,
            refused: Some(why),
        },
        Ok(Some(t)) if s.tables()?.iter().any(|(n, _)| *n == d.name) => {
            TableView::planned(t, true, &d.name)
        }
        Ok(Some(t)) if s.table_types(&t)?.is_some() => TableView {
            table: t,
            state: "adopted with its first file (an existing table that fits)",
            note: None,
            refused: None,
        },
        Ok(Some(t)) => TableView::planned(t, false, &d.name),
        Ok(None) => {
            let (t, exists) = s.table_or_planned(&d.name)?;
            TableView::planned(t, exists, &d.name)
        }
    })
}
