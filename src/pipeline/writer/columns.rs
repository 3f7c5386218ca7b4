//! Where a file's columns go: the table of its dataset and the column of that table each of the
//! file's columns lands in, decided once through the store's registry and reported when a column
//! is stored under another name. Datasets without declared columns apply their drift policy
//! here, against the table (a typed dataset was checked by the worker against its declaration);
//! the rules and their messages are the stages'.

use super::Writer;
use crate::config::{DatasetSpec, Policy};
use crate::format::{ColumnKey, SYSTEM_COLUMNS};
use crate::pipeline::stages::bad::BadRecords;
use crate::pipeline::stages::{missing_columns_reject, new_columns_reject, too_many_columns};
use crate::pipeline::{ColumnSource, Columns};
use crate::reject::{Kind, Reject, Stage};
use crate::store::keys::def::KeyDef;
use crate::store::keys::Rule;
use crate::store::names::{self, MAX_NAME};
use crate::store::{KeyReady, NewColumn};
use crate::typed::ColType;
use anyhow::Result;
use std::collections::{HashMap, HashSet};

/// What the writer tracks about the file it is storing.
#[derive(Default)]
pub(super) struct FileColumns {
    /// The dataset's table.
    pub table: String,
    /// Per chunk cell: the table column it goes to (`None`: dropped by policy).
    pub cols: Vec<Option<String>>,
    /// Per key column of the dataset: its chunk cell.
    pub key_cells: Vec<Option<usize>>,
    /// The table's data columns before this file (untyped drift).
    before: Option<Vec<String>>,
    /// Lowercased names of every table column the file has shown.
    seen: HashSet<String>,
    /// What a record whose key is stored does, as this file's cells say it.
    pub rule: Rule,
    /// Records written (new keys and replacements), and of them the replacements.
    pub stored: u64,
    pub updated: u64,
    pub duplicates: u64,
    /// Records refused because their key was stored (`on_key = "reject"`).
    pub key_rejected: u64,
    /// Chunks stored.
    pub chunks: u64,
    /// The file's bad records, stages' and keys', against `max_bad_records` (with a key).
    pub bad: Option<BadRecords>,
    /// Whether any of the file's records reached the writer yet (until then the file can start
    /// again in a new group).
    pub rows_seen: bool,
    /// What the file was stored with that a reader should know (renamed columns, …).
    pub warnings: Vec<String>,
    /// Its identity (SHA-256, size), when it came after its records (`Msg::Identity`).
    pub identity: Option<(String, u64)>,
}

impl FileColumns {
    /// Records a warning about the file once, however many times it is found.
    fn warn(&mut self, w: String) {
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    /// For an untyped dataset with `on_missing_column = fail`: the columns its table had that
    /// the file never showed.
    pub fn missing_columns(&self, spec: &DatasetSpec) -> Option<Reject> {
        if spec.typed() || spec.on_missing_column != Policy::Fail {
            return None;
        }
        let missing: Vec<String> = self
            .before
            .iter()
            .flatten()
            .filter(|c| !self.seen.contains(&c.to_lowercase()))
            .cloned()
            .collect();
        (!missing.is_empty())
            .then(|| missing_columns_reject(spec, &missing, "on_missing_column = fail"))
    }
}

/// The reject for file columns the dataset's `on_new_column = fail` refuses.
fn refused_columns(spec: &DatasetSpec, refused: &[&ColumnKey]) -> Reject {
    let described: Vec<String> = refused.iter().map(|k| k.describe()).collect();
    let names: Vec<String> = refused.iter().map(|k| k.name.clone()).collect();
    new_columns_reject(spec, &described, &names)
}

/// Why a file column is stored under another name than its own, as a sentence for the ledger.
fn rename_warning(key: &ColumnKey, col: &str) -> String {
    let why = if key.name.is_empty() {
        "its header is blank"
    } else if key.occurrence > 1 {
        "the header names it more than once"
    } else if key.name.len() > MAX_NAME {
        "the name is longer than 63 bytes"
    } else if let Some(who) = names::reserved_column(&key.name) {
        return format!(
            "column {} is stored as {col:?}: {who} keeps that name for {}",
            key.describe(),
            if who == "ferry" {
                "itself"
            } else {
                "its own use"
            }
        );
    } else {
        "the dataset has another column of that name (names that differ in case are different \
         columns)"
    };
    format!("column {} is stored as {col:?}: {why}", key.describe())
}

/// The table column of each key column of the dataset: as this file maps it, else (the file
/// lacks it) its own name.
fn key_columns(spec: &DatasetSpec, cols: &Columns, mapped: &[Option<String>]) -> Vec<String> {
    spec.key
        .iter()
        .enumerate()
        .map(|(i, k)| {
            cols.key
                .get(i)
                .copied()
                .flatten()
                .and_then(|c| mapped.get(c).cloned().flatten())
                .unwrap_or_else(|| k.clone())
        })
        .collect()
}

/// The table columns of the dataset's record key, as this file maps them (none without a key).
fn stored_key(spec: &DatasetSpec, cols: &Columns, mapped: &[Option<String>]) -> Vec<String> {
    if spec.key.is_empty() {
        return Vec::new();
    }
    cols.key
        .iter()
        .filter_map(|k| k.and_then(|i| mapped.get(i).cloned().flatten()))
        .collect()
}

impl Writer<'_> {
    /// Takes a file's column list: finds (or decides) the table and the column each of the
    /// file's columns lands in, applies the drift policy of an untyped dataset, and creates or
    /// grows the table.
    pub(super) fn columns(
        &mut self,
        spec: &DatasetSpec,
        cols: &Columns,
        file: &mut FileColumns,
    ) -> Result<Result<(), Reject>> {
        // Names and tables shared with other hosts change only under the store's lock: look
        // first, and take it only if something is to change.
        if self.store.shared_schema()
            && self.schema_changes(spec, cols)?
            && !self.store.lock_schema(!file.rows_seen)?
        {
            return Err(Contended.into());
        }
        let (table, existing, data_columns) = match self.table_for(spec, file)? {
            Ok(t) => t,
            Err(r) => return Ok(Err(r)),
        };
        // Declared columns own their names; a file column never takes one.
        let mut reserved: HashSet<String> =
            spec.columns.iter().map(|c| c.name.to_lowercase()).collect();
        let mut mapped = Vec::with_capacity(cols.defs.len());
        let mut create: Vec<NewColumn> = Vec::new();
        let mut refused: Vec<&ColumnKey> = Vec::new();
        let mut renamed = Vec::new();
        let found = Table {
            existing: &existing,
            data_columns,
        };
        for d in &cols.defs {
            let key = match &d.source {
                ColumnSource::Declared(name) => {
                    if !existing.contains_key(&name.to_lowercase()) {
                        create.push(NewColumn {
                            name: name.clone(),
                            ty: d.ty,
                        });
                    }
                    file.seen.insert(name.to_lowercase());
                    mapped.push(Some(name.clone()));
                    continue;
                }
                ColumnSource::File(key) => key,
            };
            let col = match self.place(spec, key, &found, &mut reserved, &mut create)? {
                Placed::Column(col) => col,
                Placed::Refused => {
                    refused.push(key);
                    mapped.push(None);
                    continue;
                }
                Placed::Ignored => {
                    mapped.push(None);
                    continue;
                }
            };
            if col != key.name {
                renamed.push(rename_warning(key, &col));
            }
            file.seen.insert(col.to_lowercase());
            mapped.push(Some(col));
        }
        if !refused.is_empty() {
            return Ok(Err(refused_columns(spec, &refused)));
        }
        if data_columns + create.len() > self.store.max_data_columns() {
            return Ok(Err(too_many_columns(data_columns + create.len())));
        }
        let key = stored_key(spec, cols, &mapped);
        self.store.ensure_columns(&table, &create, &key)?;
        // The table's records must be keyed as the dataset's key says before anything is
        // stored under it.
        let def =
            (!spec.key.is_empty()).then(|| KeyDef::of(spec, &key_columns(spec, cols, &mapped)));
        if let KeyReady::Rekey { from } = self.store.key_ready(&table, def.as_ref())? {
            let def = def.expect("a re-key is for a key");
            // Tried in this process already, and the records could not take it.
            if let Some(r) = self.refused.get(&(table.clone(), def.json())) {
                return Ok(Err(r.clone()));
            }
            return Err(RekeyNeeded { table, def, from }.into());
        }
        for w in renamed {
            file.warn(w);
        }
        file.key_cells = cols.key.clone();
        file.rule = crate::pipeline::key_rule(spec, cols);
        file.cols = mapped;
        file.table = table;
        Ok(Ok(()))
    }

    /// The dataset's table (decided now if it has none: the one its config names, adopted if
    /// it exists and fits, or one ferry names), its columns by lowercased name, and how many of
    /// them are data columns; the file's first look at the table is kept (`before`). A named
    /// table that cannot take the dataset is the file's reject (`schema.table`).
    fn table_for(
        &mut self,
        spec: &DatasetSpec,
        file: &mut FileColumns,
    ) -> Result<Result<TableSeen, Reject>> {
        let dataset = spec.name.as_str();
        let table = match names::named_table(&mut *self.store, spec)? {
            Err(why) => {
                return Ok(Err(Reject::new(
                    Kind::SchemaTable,
                    Stage::Store,
                    format!(
                        "dataset {dataset:?} cannot store into table {:?}: {why}",
                        spec.table.as_deref().unwrap_or("")
                    ),
                )))
            }
            Ok(Some(t)) if self.store.table(dataset)?.is_some() => t,
            Ok(Some(t)) => self.store.create_table_name(dataset, Some(&t))?,
            Ok(None) => {
                let t = self.store.create_table_name(dataset, None)?;
                if t != dataset {
                    let why = format!(
                        "dataset {dataset:?} stores into table {t:?}: a table named {dataset:?} \
                         is taken or reserved (set `table` on the dataset to choose its name)"
                    );
                    tracing::warn!(dataset, table = %t, "{why}");
                    file.warn(why);
                }
                t
            }
        };
        let existing = self.store.table_columns(&table)?;
        let data: Vec<&String> = existing
            .iter()
            .filter(|(l, _)| !SYSTEM_COLUMNS.contains(&l.as_str()))
            .map(|(_, c)| c)
            .collect();
        let data_columns = data.len();
        if file.before.is_none() {
            file.before = Some(data.into_iter().cloned().collect());
        }
        Ok(Ok((table, existing, data_columns)))
    }

    /// Whether taking this file's columns may change names or tables (a look that changes
    /// nothing; when unsure, yes).
    fn schema_changes(&mut self, spec: &DatasetSpec, cols: &Columns) -> Result<bool> {
        let dataset = spec.name.as_str();
        let Some(table) = self.store.table(dataset)? else {
            return Ok(true);
        };
        let existing = self.store.table_columns(&table)?;
        if existing.is_empty() {
            return Ok(true);
        }
        for d in &cols.defs {
            let col = match &d.source {
                ColumnSource::Declared(name) => name.clone(),
                ColumnSource::File(key) => match self.store.file_column(dataset, key)? {
                    Some(col) => col,
                    None => return Ok(true),
                },
            };
            if !existing.contains_key(&col.to_lowercase()) {
                return Ok(true);
            }
        }
        Ok(!spec.key.is_empty() && !existing.contains_key("_key"))
    }

    /// The table column a file column lands in: the one the registry remembers, or a new one
    /// (if the dataset's drift policy takes new columns), queued in `create` when the table
    /// lacks it.
    fn place(
        &mut self,
        spec: &DatasetSpec,
        key: &ColumnKey,
        table: &Table,
        reserved: &mut HashSet<String>,
        create: &mut Vec<NewColumn>,
    ) -> Result<Placed> {
        let dataset = spec.name.as_str();
        if let Some(col) = self.store.file_column(dataset, key)? {
            // Known: its column exists, unless a rollback or a hand took it away.
            let lower = col.to_lowercase();
            if !table.existing.contains_key(&lower) && reserved.insert(lower) {
                create.push(NewColumn {
                    name: col.clone(),
                    ty: ColType::String,
                });
            }
            return Ok(Placed::Column(col));
        }
        // A column this dataset has never stored from a file.
        let (_, new) = self
            .store
            .assign_column(dataset, key, table.existing, reserved, false)?;
        let policy = if spec.typed() {
            Policy::Add
        } else {
            spec.on_new_column
        };
        match (new && table.data_columns > 0, policy) {
            (true, Policy::Fail) => return Ok(Placed::Refused),
            (true, Policy::Ignore) => return Ok(Placed::Ignored),
            _ => {}
        }
        let (col, new) = self
            .store
            .assign_column(dataset, key, table.existing, reserved, true)?;
        reserved.insert(col.to_lowercase());
        if new {
            create.push(NewColumn {
                name: col.clone(),
                ty: ColType::String,
            });
        }
        Ok(Placed::Column(col))
    }
}

/// A dataset's table as a file first sees it: its name, its columns by lowercased name, and how
/// many of them hold data.
type TableSeen = (String, HashMap<String, String>, usize);

/// The dataset table as the file found it.
struct Table<'a> {
    /// Its columns by lowercased name.
    existing: &'a HashMap<String, String>,
    /// How many of them hold data (not ferry's own).
    data_columns: usize,
}

/// Another writer holds the lock on names and tables, and nothing of this file is stored yet:
/// it starts again in a new group, once the lock is free.
#[derive(Debug)]
pub(super) struct Contended;

impl std::fmt::Display for Contended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("another writer is changing the dataset's names or tables")
    }
}

impl std::error::Error for Contended {}

/// The table's records are keyed under another definition than the dataset's key (or none):
/// they are re-keyed, in a transaction of their own, before the file is stored.
#[derive(Debug)]
pub(super) struct RekeyNeeded {
    pub table: String,
    pub def: KeyDef,
    pub from: Option<KeyDef>,
}

impl std::fmt::Display for RekeyNeeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "table {} must be re-keyed first", self.table)
    }
}

impl std::error::Error for RekeyNeeded {}

/// Where a file column goes.
enum Placed {
    Column(String),
    /// A new column the dataset refuses (`on_new_column = fail`).
    Refused,
    /// A new column the dataset drops (`on_new_column = ignore`).
    Ignored,
}
