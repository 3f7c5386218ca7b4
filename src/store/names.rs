//! The naming rules every backend shares: which table a new dataset gets and which column a new
//! file column gets, given the names already taken. Deterministic, so concurrent processes that
//! decide inside the store's write transaction agree, and the same names come out whichever
//! store holds them (the longest name is PostgreSQL's limit, 63 bytes).
//!
//! Pure functions: no IO, no SQL.

use crate::format::{ColumnKey, SYSTEM_COLUMNS};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

/// Table names ferry keeps for itself (its own tables, now and to come).
const RESERVED_TABLES: &[&str] = &[
    "files",
    "datasets",
    "dataset_columns",
    "exports",
    "export_batches",
    "record_keys",
    "rejects",
];

/// Column names a store keeps for its own use, lowercased: PostgreSQL's system columns (a table
/// cannot have a column of that name) and the names SQLite reads as a row's id. A file column
/// of such a name is stored under another one on both stores, so a file lands in the same
/// columns whichever store holds it.
const BACKEND_COLUMNS: &[(&str, &str)] = &[
    ("xmin", "PostgreSQL"),
    ("xmax", "PostgreSQL"),
    ("cmin", "PostgreSQL"),
    ("cmax", "PostgreSQL"),
    ("ctid", "PostgreSQL"),
    ("tableoid", "PostgreSQL"),
    ("oid", "PostgreSQL and SQLite"),
    ("rowid", "SQLite"),
    ("_rowid_", "SQLite"),
];

/// Who keeps a column name for itself, if anyone: `ferry` for its own columns (`_id`,
/// `_file_id`, `_line`, `_key`), else the store that does. Any case.
pub fn reserved_column(name: &str) -> Option<&'static str> {
    if SYSTEM_COLUMNS.iter().any(|s| s.eq_ignore_ascii_case(name)) {
        return Some("ferry");
    }
    BACKEND_COLUMNS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, who)| *who)
}

/// The most data columns a PostgreSQL table can hold: its limit of 1,600 columns less ferry's
/// own four.
pub const MAX_DATA_COLUMNS_POSTGRES: usize = 1600 - crate::format::SYSTEM_COLUMNS.len();

/// Prefixes a dataset table may not start with: SQLite refuses `sqlite_`, PostgreSQL keeps `pg_`,
/// ferry keeps `ferry_`.
const RESERVED_PREFIXES: &[&str] = &["sqlite_", "ferry_", "pg_"];

/// The longest table or column name ferry gives: PostgreSQL's limit, so names stay the same
/// whichever store holds them.
pub const MAX_NAME: usize = 63;

/// The most data columns any store accepts in a dataset table (SQLite's limit is 2000 in all,
/// and ferry keeps four for itself); a store may accept fewer (`Ingest::max_data_columns`).
pub const MAX_DATA_COLUMNS: usize = 2000 - crate::format::SYSTEM_COLUMNS.len();

/// Eight hex digits of the SHA-256 of `s`: a stable, short tie-breaker.
pub fn short_hash(s: &str) -> String {
    Sha256::digest(s.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `stem` + `suffix`, cutting `stem` (at a character boundary) so the whole fits `max` bytes.
/// A cut stem also gets a hash of the whole, so two long names that share a beginning differ.
fn fit(stem: &str, suffix: &str, max: usize) -> String {
    if stem.len() + suffix.len() <= max {
        return format!("{stem}{suffix}");
    }
    let tag = format!("_{}", short_hash(stem));
    let mut cut = max.saturating_sub(suffix.len() + tag.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{tag}{suffix}", &stem[..cut])
}

/// The table for a dataset that has none yet: its name when that is free and allowed, else a
/// deterministic variant. `taken` answers for lowercased names.
pub fn table_name_for(dataset: &str, taken: impl Fn(&str) -> bool) -> String {
    let lower = dataset.to_lowercase();
    let stem = if RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p)) {
        format!("data_{dataset}")
    } else if RESERVED_TABLES.contains(&lower.as_str()) {
        format!("{dataset}_data")
    } else {
        dataset.to_string()
    };
    let free = |n: &str| !taken(&n.to_lowercase());
    let first = fit(&stem, "", MAX_NAME);
    if free(&first) {
        return first;
    }
    // Another dataset has this name (in another case, or after the `_data` suffix): a suffix
    // that depends on this dataset's own name only.
    let h = format!("_{}", short_hash(dataset));
    let second = fit(&stem, &h, MAX_NAME);
    if free(&second) {
        return second;
    }
    (2..)
        .map(|n| fit(&stem, &format!("{h}_{n}"), MAX_NAME))
        .find(|c| free(c))
        .expect("some suffix is free")
}

/// The column for a file column that has none yet: its name when free, else numbered
/// (`name_2`, …; a repeat starts at its occurrence). `taken` answers for lowercased names.
pub fn column_name_for(key: &ColumnKey, taken: impl Fn(&str) -> bool) -> String {
    let stem = key.stem();
    let free = |n: &str| !taken(&n.to_lowercase());
    if key.occurrence == 1 {
        let plain = fit(&stem, "", MAX_NAME);
        if free(&plain) {
            return plain;
        }
    }
    (key.occurrence.max(2)..)
        .map(|k| fit(&stem, &format!("_{k}"), MAX_NAME))
        .find(|c| free(c))
        .expect("some number is free")
}

/// The table column a file column without one takes: an existing column of exactly its name
/// that no other file column `owned` and that is not `reserved` (`false`: nothing to create), or
/// a new free name (`true`). `existing`: the table's columns by lowercased name; `owned` and
/// `reserved` hold lowercased names.
pub fn choose_column(
    key: &ColumnKey,
    existing: &HashMap<String, String>,
    owned: &HashSet<String>,
    reserved: &HashSet<String>,
) -> (String, bool) {
    let lower = key.name.to_lowercase();
    // A table column of exactly this name that no file column holds yet (made by hand, or left
    // by a rollback) is adopted — never one ferry or the store keeps for itself.
    let adopt = key.occurrence == 1
        && !key.name.is_empty()
        && existing.get(&lower).is_some_and(|c| *c == key.name)
        && !owned.contains(&lower)
        && !reserved.contains(&lower)
        && reserved_column(&key.name).is_none();
    if adopt {
        return (key.name.clone(), false);
    }
    let taken = |n: &str| {
        existing.contains_key(n)
            || owned.contains(n)
            || reserved.contains(n)
            || reserved_column(n).is_some()
    };
    (column_name_for(key, taken), true)
}

/// A column of an existing table as the store describes it: its name, its type in the store's
/// canonical spelling (SQLite: the type affinity, `INTEGER`, `REAL`, `TEXT`, `NUMERIC`,
/// `BLOB`; PostgreSQL: the type's name), and whether it is the primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    pub name: String,
    pub ty: String,
    pub pk: bool,
}

/// Whether an existing table (not made for this dataset by ferry) can take the dataset: it has
/// ferry's own columns, as ferry makes them, and each column the dataset declares that it has is
/// of the type ferry would store that column as (`wanted`: name → type). An untyped dataset
/// stores text: every other column must be of `text` type. Else the reason, for the operator.
pub fn table_fits(
    existing: &[ColumnType],
    wanted: &[(String, &str)],
    typed: bool,
    int_type: &str,
    text_type: &str,
) -> Result<(), String> {
    let find = |n: &str| existing.iter().find(|c| c.name.eq_ignore_ascii_case(n));
    for sys in ["_id", "_file_id", "_line"] {
        match find(sys) {
            None => {
                return Err(format!(
                    "it has no {sys} column (ferry's tables carry _id, _file_id and _line; let \
                     ferry create the table, or add them)"
                ))
            }
            Some(c) if c.ty != int_type => {
                return Err(format!("its {sys} column is {}, not {int_type}", c.ty))
            }
            Some(_) => {}
        }
    }
    if let Some(k) = find("_key").filter(|k| k.ty != int_type) {
        return Err(format!("its _key column is {}, not {int_type}", k.ty));
    }
    for (name, ty) in wanted {
        if let Some(c) = find(name).filter(|c| c.ty != *ty) {
            return Err(format!(
                "its column {:?} is {}, but the dataset stores it as {ty}",
                c.name, c.ty
            ));
        }
    }
    if !typed {
        let wrong: Vec<String> = existing
            .iter()
            .filter(|c| reserved_column(&c.name).is_none() && c.ty != text_type)
            .map(|c| format!("{:?} ({})", c.name, c.ty))
            .collect();
        if !wrong.is_empty() {
            return Err(format!(
                "the dataset declares no columns and stores text, but the table has columns of \
                 other types: {} (declare the dataset's columns with their types)",
                wrong.join(", ")
            ));
        }
    }
    Ok(())
}

/// What deciding a dataset's table needs to know of the store.
pub trait TableLookup {
    /// The table the dataset stores into, if it has one.
    fn registered(&mut self, dataset: &str) -> anyhow::Result<Option<String>>;
    /// The dataset a table is registered to, if any.
    fn owner(&mut self, table: &str) -> anyhow::Result<Option<String>>;
    /// An existing table's columns (`None`: no such table).
    fn types(&mut self, table: &str) -> anyhow::Result<Option<Vec<ColumnType>>>;
    /// The type the store gives a column of a declared type.
    fn type_of(&self, ty: crate::typed::ColType) -> &'static str;
}

/// The table a dataset that names one (`table = "sales"`) stores into: the one it has, or the
/// one named — adopted when it exists and fits (`table_fits`), created when it does not. `None`
/// when the dataset names no table (ferry chooses). `Err`: why the named table cannot take it.
pub fn named_table<L: TableLookup + ?Sized>(
    look: &mut L,
    spec: &crate::config::DatasetSpec,
) -> anyhow::Result<Result<Option<String>, String>> {
    let registered = look.registered(&spec.name)?;
    let Some(wanted) = spec.table.as_deref() else {
        return Ok(Ok(registered));
    };
    if let Some(t) = registered {
        return Ok(if t.eq_ignore_ascii_case(wanted) {
            Ok(Some(t))
        } else {
            Err(format!(
                "the dataset stores into table {t:?} already; ferry does not move a dataset's \
                 records to another table (set table = {t:?}, or load into a new dataset)"
            ))
        });
    }
    if let Some(other) = look.owner(wanted)? {
        return Ok(Err(format!(
            "table {wanted:?} holds the records of dataset {other:?}; two datasets never share \
             a table"
        )));
    }
    if let Some(existing) = look.types(wanted)? {
        let declared: Vec<(String, &str)> = spec
            .columns
            .iter()
            .map(|c| (c.name.clone(), look.type_of(c.ty)))
            .collect();
        let int = look.type_of(crate::typed::ColType::Int);
        let text = look.type_of(crate::typed::ColType::String);
        if let Err(why) = table_fits(&existing, &declared, spec.typed(), int, text) {
            return Ok(Err(format!(
                "the existing table {wanted:?} does not fit: {why}"
            )));
        }
    }
    Ok(Ok(Some(wanted.to_string())))
}

/// What a writer knows of one dataset's registered names: its table, and the table column each
/// file column (name and occurrence) landed in. Backends load it from their registry tables.
#[derive(Debug, Default, Clone)]
pub struct DatasetNames {
    pub table: Option<String>,
    columns: HashMap<String, Vec<(u32, String)>>,
    /// Lowercased table columns that a file column owns.
    owned: HashSet<String>,
}

impl DatasetNames {
    pub fn new(table: Option<String>) -> DatasetNames {
        DatasetNames {
            table,
            ..DatasetNames::default()
        }
    }

    /// Notes that file column `source` (its `occurrence`) lands in `column`.
    pub fn add(&mut self, source: String, occurrence: u32, column: String) {
        self.owned.insert(column.to_lowercase());
        self.columns
            .entry(source)
            .or_default()
            .push((occurrence, column));
    }

    /// The table column a file column lands in, if it has one.
    pub fn column(&self, key: &ColumnKey) -> Option<String> {
        self.columns
            .get(&key.name)
            .and_then(|v| v.iter().find(|(o, _)| *o == key.occurrence))
            .map(|(_, c)| c.clone())
    }

    /// See `choose_column`, with this dataset's owned columns.
    pub fn choose(
        &self,
        key: &ColumnKey,
        existing: &HashMap<String, String>,
        reserved: &HashSet<String>,
    ) -> (String, bool) {
        choose_column(key, existing, &self.owned, reserved)
    }
}

/// The table a dataset has (`true`), or the one it would get now given the lowercased names
/// already `taken` (`false`).
pub fn table_or_planned(
    table: Option<String>,
    dataset: &str,
    taken: &HashSet<String>,
) -> (String, bool) {
    match table {
        Some(t) => (t, true),
        None => (
            table_name_for(dataset, |n| taken.contains(n) || reserved_table(n)),
            false,
        ),
    }
}

/// Whether a lowercased name is one a dataset table may not have at all.
pub fn reserved_table(lower: &str) -> bool {
    RESERVED_TABLES.contains(&lower) || RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn key(name: &str, occurrence: u32, position: u32) -> ColumnKey {
        ColumnKey {
            name: name.into(),
            occurrence,
            position,
        }
    }

    #[test]
    fn tables_never_collide_and_are_loadable() {
        let mut taken: HashSet<String> = HashSet::new();
        let mut give = |d: &str| {
            let t = table_name_for(d, |n| taken.contains(n));
            assert!(taken.insert(t.to_lowercase()), "{d} → {t} twice");
            assert!(!t.to_lowercase().starts_with("sqlite_"), "{t}");
            assert!(t.len() <= MAX_NAME, "{t}");
            t
        };
        assert_eq!(give("Orders"), "Orders");
        let second = give("orders");
        assert!(
            second.starts_with("orders_") && second.len() == 15,
            "{second}"
        );
        assert_eq!(give("files"), "files_data");
        let clash = give("files_data");
        assert_ne!(clash.to_lowercase(), "files_data");
        give("FILES");
        assert_eq!(give("sqlite_stat1"), "data_sqlite_stat1");
        assert_eq!(give("ferry_x"), "data_ferry_x");
        let long = "x".repeat(200);
        let a = give(&long);
        let b = give(&format!("{long}y"));
        assert_ne!(a, b);
        // Deterministic: the same registry state gives the same name.
        let again = table_name_for("orders", |n| n == "orders");
        assert_eq!(again, second);
    }

    #[test]
    fn existing_tables_fit_only_as_ferry_would_make_them() {
        let col = |n: &str, t: &str| ColumnType {
            name: n.into(),
            ty: t.into(),
            pk: n == "_id",
        };
        let base = vec![
            col("_id", "INTEGER"),
            col("_file_id", "INTEGER"),
            col("_line", "INTEGER"),
        ];
        let wanted = vec![("amount".to_string(), "TEXT"), ("n".to_string(), "INTEGER")];
        let mut t = base.clone();
        t.push(col("amount", "TEXT"));
        assert!(table_fits(&t, &wanted, true, "INTEGER", "TEXT").is_ok());
        t.push(col("N", "REAL"));
        assert!(table_fits(&t, &wanted, true, "INTEGER", "TEXT")
            .unwrap_err()
            .contains("\"N\" is REAL"));
        assert!(
            table_fits(&[col("id", "TEXT")], &[], false, "INTEGER", "TEXT")
                .unwrap_err()
                .contains("no _id")
        );
        let mut u = base;
        u.push(col("v", "NUMERIC"));
        assert!(table_fits(&u, &[], false, "INTEGER", "TEXT")
            .unwrap_err()
            .contains("\"v\" (NUMERIC)"));
    }

    #[test]
    fn columns_are_numbered_past_clashes() {
        let taken: HashSet<&str> = ["name", "name_2", "_line"].into_iter().collect();
        let t = |n: &str| taken.contains(n);
        assert_eq!(column_name_for(&key("Name", 1, 2), t), "Name_3");
        assert_eq!(column_name_for(&key("name", 3, 5), t), "name_3");
        assert_eq!(column_name_for(&key("", 1, 4), t), "column_4");
        assert_eq!(column_name_for(&key("_line", 1, 1), t), "_line_2");
        for (name, lower) in [
            ("_id", "_id"),
            ("XMIN", "xmin"),
            ("ctid", "ctid"),
            ("RowId", "rowid"),
        ] {
            let existing: HashMap<String, String> = [(lower.to_string(), name.to_string())].into();
            let (col, new) = choose_column(
                &key(name, 1, 1),
                &existing,
                &HashSet::new(),
                &HashSet::new(),
            );
            assert!(new && col.to_lowercase() != lower, "{name} → {col}");
            assert!(reserved_column(&col).is_none(), "{col}");
        }
        let long = "h".repeat(100);
        let c = column_name_for(&key(&long, 1, 1), t);
        assert!(c.len() <= MAX_NAME && c.starts_with("hhh"), "{c}");
    }
}
