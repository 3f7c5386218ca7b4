//! `ferry rekey DATASET [--keep first|latest] [--dry-run] [--json]`: keys a dataset's stored
//! records as its `key` says now, in the store, exactly (see `store::keys::rekey`). A run does
//! the same by itself when the key changes; this command is how records the new key cannot tell
//! apart are resolved (`--keep`), or how the work is done ahead of the next run.

use super::Outcome;
use crate::cli::{KeepArg, RekeyArgs};
use crate::config::Config;
use crate::exit::ExitError;
use crate::format::ColumnKey;
use crate::report;
use crate::store::keys::def::KeyDef;
use crate::store::keys::rekey::Keep;
use crate::store::{self, Rekey};
use anyhow::Result;

pub fn run(cfg: &Config, args: &RekeyArgs) -> Result<Outcome> {
    crate::shutdown::install_signal_handlers();
    let stop = crate::shutdown::Shutdown::new();
    let spec = cfg
        .datasets
        .iter()
        .find(|d| d.name == args.dataset)
        .ok_or_else(|| {
            ExitError::NotFound(format!(
                "no dataset named {:?} in the config; a key is set per dataset there",
                args.dataset
            ))
        })?;
    if spec.key.is_empty() {
        return Err(ExitError::Usage(format!(
            "dataset {:?} has no `key` in the config: there is nothing to key its records by",
            spec.name
        ))
        .into());
    }
    let mut s = store::open(&cfg.store)?;
    let table = s
        .tables()?
        .into_iter()
        .find(|(d, _)| d == &spec.name)
        .map(|(_, t)| t)
        .ok_or_else(|| {
            ExitError::NotFound(format!("dataset {:?} has no records stored yet", spec.name))
        })?;
    // The key's columns as the table names them.
    let mut columns = Vec::new();
    for k in &spec.key {
        let declared = spec.columns.iter().find(|c| c.name.eq_ignore_ascii_case(k));
        let col = match declared {
            Some(c) => c.name.clone(),
            None => {
                let key = ColumnKey {
                    name: k.clone(),
                    occurrence: 1,
                    position: 0,
                };
                s.file_column(&spec.name, &key)?
                    .unwrap_or_else(|| k.clone())
            }
        };
        columns.push(col);
    }
    drop(s);
    let def = KeyDef::of(spec, &columns);
    let version = spec.version.as_deref().and_then(|v| {
        spec.columns
            .iter()
            .find(|c| c.name == v)
            .map(|c| (c.name.as_str(), c.ty))
    });
    let how = Rekey {
        def: &def,
        version,
        keep: args.keep.map(|k| match k {
            KeepArg::First => Keep::First,
            KeepArg::Latest => Keep::Latest,
        }),
        apply: !args.dry_run,
    };
    let mut ingest = store::open_ingest(&cfg.store, None)?;
    let Some(done) = ingest.rekey(&table, &how, &|| stop.is_triggered())? else {
        return Ok(Outcome::Interrupted);
    };
    let unresolved = done
        .conflict
        .as_ref()
        .filter(|c| c.empty > 0 || c.unnormalized > 0 || (c.duplicates > 0 && how.keep.is_none()));
    let shown = report::Rekeyed {
        dataset: spec.name.clone(),
        table: table.clone(),
        key: def.describe(),
        dry_run: args.dry_run,
        records: done.records,
        rehashed: done.changed,
        removed: done.removed,
        conflict: unresolved.map(|c| c.describe()),
    };
    report::print(&shown, args.json)?;
    if let Some(c) = unresolved {
        let fix = if c.empty > 0 || c.unnormalized > 0 {
            "records without a key, or with key values the new normalisation would change, must \
             be fixed or removed in the table (or the key chosen otherwise)"
        } else {
            "--keep first or --keep latest keeps one record of each key and removes the others"
        };
        return Err(ExitError::Usage(format!(
            "table {table:?} was not re-keyed: {}; {fix}",
            c.describe()
        ))
        .into());
    }
    Ok(Outcome::Done)
}
