//! Shape: a file's columns mapped onto the dataset's (R-drift), and every drift rule's reject —
//! the typed ones applied here on the workers, the untyped ones by the writer against the
//! table, with the same messages.

use super::super::{ColumnDef, ColumnSource};
use crate::config::{DatasetSpec, Policy};
use crate::format::ColumnKey;
use crate::reject::{name_list, plural, Kind, Reject, Stage};
use crate::store::names::MAX_DATA_COLUMNS;
use crate::typed::{ColType, ColumnSpec};

/// Maps a file's columns onto the dataset's.
#[derive(Debug, Default)]
pub(super) struct Shape {
    /// Output columns: the declared ones first (typed datasets), then the file's own.
    pub(super) out: Vec<ColumnDef>,
    /// Per output column: the file column it is read from.
    pub(super) from: Vec<Option<usize>>,
    /// Per output column: the declared column whose contract converts it.
    pub(super) conv: Vec<Option<usize>>,
    /// Per declared column: whether its file column matched its name exactly (not only
    /// without case).
    exact: Vec<bool>,
    /// The file's columns so far (JSON files reveal columns as they go).
    keys: Vec<ColumnKey>,
    /// Per key column (in `key` order): its output column, once the file has shown it.
    pub(super) key_out: Vec<Option<usize>>,
}

fn ambiguous(spec: &DatasetSpec, what: &str, a: &ColumnKey, b: &ColumnKey) -> Reject {
    Reject::new(
        Kind::SchemaAmbiguousColumn,
        Stage::Validate,
        format!(
            "the file's columns {} and {} could both be {what} of dataset {:?} (they differ only \
             in case or surrounding spaces, and neither matches exactly)",
            a.describe(),
            b.describe(),
            spec.name
        ),
    )
    .in_field(format!("{}, {}", a.name, b.name))
}

impl Shape {
    pub(super) fn new(spec: &DatasetSpec) -> Shape {
        let mut s = Shape {
            key_out: vec![None; spec.key.len()],
            exact: vec![false; spec.columns.len()],
            ..Shape::default()
        };
        for (i, c) in spec.columns.iter().enumerate() {
            s.push(ColumnSource::Declared(c.name.clone()), c.ty, None, Some(i));
        }
        s
    }

    fn push(
        &mut self,
        source: ColumnSource,
        ty: ColType,
        from: Option<usize>,
        conv: Option<usize>,
    ) {
        self.out.push(ColumnDef { source, ty });
        self.from.push(from);
        self.conv.push(conv);
    }

    /// Maps the file columns not mapped yet. Errors when drift policy rejects the file.
    pub(super) fn map(&mut self, spec: &DatasetSpec, names: &[String]) -> Result<(), Reject> {
        let first_new = self.keys.len();
        self.keys = ColumnKey::for_header(names);
        let new = first_new..self.keys.len();
        if !spec.typed() {
            for i in new {
                self.push(
                    ColumnSource::File(self.keys[i].clone()),
                    ColType::String,
                    Some(i),
                    None,
                );
            }
            return self.map_key(spec);
        }
        // Declared columns take the file column of exactly their name first, then one that
        // differs only in case; two candidates and no exact match is a guess, so refused.
        let mut rest = Vec::new();
        for i in new {
            let k = &self.keys[i];
            let d = (k.occurrence == 1)
                .then(|| spec.columns.iter().position(|c| c.source == k.name))
                .flatten();
            match d {
                Some(d) => match self.from[d] {
                    None => {
                        self.from[d] = Some(i);
                        self.exact[d] = true;
                    }
                    Some(j) => {
                        let other = self.keys[j].clone();
                        return Err(ambiguous(
                            spec,
                            &format!("column {:?}", spec.columns[d].name),
                            &other,
                            &self.keys[i],
                        ));
                    }
                },
                None => rest.push(i),
            }
        }
        let mut refused = Vec::new();
        for i in rest {
            let k = self.keys[i].clone();
            let d = spec
                .columns
                .iter()
                .position(|c| c.source.eq_ignore_ascii_case(&k.name));
            match d.map(|d| (d, self.from[d])) {
                Some((d, None)) => {
                    self.from[d] = Some(i);
                    self.exact[d] = false;
                    continue;
                }
                Some((d, Some(j))) if !self.exact[d] => {
                    let other = self.keys[j].clone();
                    return Err(ambiguous(
                        spec,
                        &format!("column {:?}", spec.columns[d].name),
                        &other,
                        &k,
                    ));
                }
                _ => {}
            }
            match spec.on_new_column {
                Policy::Fail => refused.push(k.name.clone()),
                Policy::Ignore => {}
                Policy::Add => self.push(ColumnSource::File(k), ColType::String, Some(i), None),
            }
        }
        if !refused.is_empty() {
            let described: Vec<String> = refused.iter().map(|n| format!("{n:?}")).collect();
            return Err(new_columns_reject(spec, &described, &refused));
        }
        self.map_key(spec)
    }

    /// Finds the output column of each key column: a declared column by name (without case),
    /// else the file column of exactly that name, else the one differing only in case.
    fn map_key(&mut self, spec: &DatasetSpec) -> Result<(), Reject> {
        for (p, k) in spec.key.iter().enumerate() {
            let declared = self.out.iter().position(
                |c| matches!(&c.source, ColumnSource::Declared(n) if n.eq_ignore_ascii_case(k)),
            );
            if declared.is_some() {
                self.key_out[p] = declared;
                continue;
            }
            let file = |j: usize| match &self.out[j].source {
                ColumnSource::File(key) if key.occurrence == 1 => Some(key),
                _ => None,
            };
            let exact = (0..self.out.len()).find(|&j| file(j).is_some_and(|f| f.name == *k));
            let near: Vec<usize> = (0..self.out.len())
                .filter(|&j| file(j).is_some_and(|f| f.name.eq_ignore_ascii_case(k)))
                .collect();
            self.key_out[p] = match (exact, near.as_slice()) {
                (Some(j), _) => Some(j),
                (None, [j]) => Some(*j),
                (None, []) => None,
                (None, [a, b, ..]) => {
                    let (a, b) = (file(*a).cloned(), file(*b).cloned());
                    return Err(ambiguous(
                        spec,
                        &format!("key column {k:?}"),
                        &a.expect("a file column"),
                        &b.expect("a file column"),
                    ));
                }
            };
        }
        Ok(())
    }

    /// Declared columns the file has not shown (so far).
    fn missing<'s>(&self, spec: &'s DatasetSpec) -> Vec<&'s ColumnSpec> {
        spec.columns
            .iter()
            .enumerate()
            .filter(|(i, _)| self.from[*i].is_none())
            .map(|(_, c)| c)
            .collect()
    }

    /// Checks missing declared columns against the policy (typed datasets).
    pub(super) fn check_missing(&self, spec: &DatasetSpec) -> Result<(), Reject> {
        let missing = self.missing(spec);
        let refused: Vec<String> = missing
            .iter()
            .filter(|c| c.required || spec.on_missing_column == Policy::Fail)
            .map(|c| c.source.clone())
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        let why = if spec.on_missing_column == Policy::Fail {
            "on_missing_column = fail"
        } else {
            "required"
        };
        Err(missing_columns_reject(spec, &refused, why))
    }

    /// Key columns with no output column (untyped datasets whose files lack them).
    pub(super) fn missing_key(&self, spec: &DatasetSpec) -> Vec<String> {
        spec.key
            .iter()
            .zip(&self.key_out)
            .filter(|(_, o)| o.is_none())
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// The reject for file columns a dataset refuses (R-drift), typed or not: `described` as the
/// message shows them, `fields` as the reject's field lists them.
pub fn new_columns_reject(spec: &DatasetSpec, described: &[String], fields: &[String]) -> Reject {
    Reject::new(
        Kind::SchemaNewColumn,
        Stage::Validate,
        format!(
            "the file has column{} {} that dataset {:?} does not {} (on_new_column = {})",
            plural(described.len()),
            described.join(", "),
            spec.name,
            if spec.typed() { "declare" } else { "have" },
            spec.on_new_column.id()
        ),
    )
    .in_field(fields.join(", "))
}

/// The reject for dataset columns a file lacks (R-drift), typed or not; `why` names the rule.
pub fn missing_columns_reject(spec: &DatasetSpec, names: &[String], why: &str) -> Reject {
    Reject::new(
        Kind::SchemaMissingColumn,
        Stage::Validate,
        format!(
            "the file lacks column{} {} of dataset {:?} ({why})",
            plural(names.len()),
            name_list(names),
            spec.name
        ),
    )
    .in_field(names.join(", "))
}

/// The reject for a file (or table) with more columns than a table can hold.
pub fn too_many_columns(n: usize) -> Reject {
    Reject::new(
        Kind::SchemaTooManyColumns,
        Stage::Validate,
        format!("{n} columns are more than a dataset table holds ({MAX_DATA_COLUMNS})"),
    )
}
