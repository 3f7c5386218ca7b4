//! The exact comparison of hash matches with stored records: key values in their column types,
//! and the version or every value where `on_key` needs them. The stored values are read by one
//! binary COPY per cluster of ids and compared here with the chunk's values encoded as they
//! would be stored (`order::same`, `order::order`: PostgreSQL's equality and order).

use super::binary::{self, PgType};
use super::keys::{ranges, Runs, MAX_RANGES, RANGE_GAP};
use super::order;
use super::tables::{by_id, ident, index_ids, TableInfo};
use crate::record::Cell;
use crate::store::keys::{Compare, RunStore, Seen, Wants};
use crate::store::ChunkInsert;
use anyhow::{Context, Result};
use std::collections::HashMap;

/// Compares a chunk's rows with stored records in the database, in the columns' types.
pub(super) struct PgCompare<'a> {
    pub(super) runs: Runs<'a>,
    pub(super) ins: &'a ChunkInsert<'a>,
    pub(super) info: &'a TableInfo,
    pub(super) indexed: &'a mut bool,
}

/// A column compared: its chunk cell (`None`: the file lacks it, NULL), name and type.
struct Part<'a> {
    cell: Option<usize>,
    name: &'a str,
    ty: PgType,
}

impl PgCompare<'_> {
    fn part<'n>(&self, cell: Option<usize>, name: &'n str) -> Result<Part<'n>> {
        let ty = self
            .info
            .ty(name)
            .with_context(|| format!("column {name} has a type ferry cannot write"))?;
        Ok(Part { cell, name, ty })
    }
}

/// Row `r`'s value of a part, as a binary array element.
fn encode(ins: &ChunkInsert, part: &Part, r: usize, out: &mut Vec<u8>) -> Result<()> {
    let chunk = ins.chunk;
    let cell = part.cell.map_or(Cell::Null, |i| chunk.row(r)[i]);
    let text = matches!(cell, Cell::Text { .. })
        .then(|| chunk.text(cell))
        .flatten();
    binary::cell(out, part.ty, cell, text).map_err(|why| {
        let name = part.name;
        binary::Unsupported(format!("line {}, column {name}: {why}", chunk.lines[r])).into()
    })
}

impl Compare for PgCompare<'_> {
    fn runs(&mut self) -> &mut dyn RunStore {
        &mut self.runs
    }

    fn compare(&mut self, pairs: &[(i64, usize)]) -> Result<Vec<Seen>> {
        let ins = self.ins;
        let column =
            |c: Option<usize>| c.and_then(|i| ins.columns.get(i).and_then(Option::as_deref));
        let keys: Vec<Part> = ins
            .key_cells
            .iter()
            .map(|&c| {
                let name = column(c).context("a key column of the dataset is not stored")?;
                self.part(c, name)
            })
            .collect::<Result<_>>()?;
        let wants = ins.rule.wants();
        let mut extra: Vec<Part> = Vec::new();
        // Table columns the file does not have: equal only if NULL there.
        let mut absent: Vec<String> = Vec::new();
        match wants {
            Wants::Key => {}
            Wants::Version => {
                let (cell, _) = ins.rule.version.expect("a version");
                let name = column(cell).context("the version column is not stored")?;
                extra.push(self.part(cell, name)?);
            }
            Wants::Content => {
                let mapped: HashMap<String, usize> = ins
                    .columns
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| c.as_ref().map(|n| (n.to_lowercase(), i)))
                    .collect();
                for (name, _) in &self.info.columns {
                    let lower = name.to_lowercase();
                    if crate::format::SYSTEM_COLUMNS.contains(&lower.as_str()) || lower == "_key" {
                        continue;
                    }
                    match mapped.get(&lower) {
                        Some(&i) => extra.push(self.part(Some(i), name)?),
                        None => absent.push(name.clone()),
                    }
                }
            }
        }
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.sort_unstable_by_key(|&i| pairs[i].0);
        let sorted: Vec<i64> = order.iter().map(|&i| pairs[i].0).collect();
        // Per cluster of close ids, one range of the `_id` index; ids spread wider are looked
        // up one by one in a single statement.
        let mut spans: Vec<Option<(i64, i64)>> =
            ranges(sorted.iter().map(|&id| (id, id)).collect(), RANGE_GAP)
                .into_iter()
                .map(Some)
                .collect();
        if spans.len() > MAX_RANGES {
            spans = vec![None];
        }
        if !*self.indexed {
            index_ids(self.runs.c()?, ins.table)?;
            *self.indexed = true;
        }
        // The stored values are read (binary COPY) and compared here, in the columns' types
        // (`order::same`, `order::order`): the database only reads by id.
        let all: Vec<&Part> = keys.iter().chain(extra.iter()).collect();
        let mut select: Vec<String> = vec!["t._id".into()];
        for p in &all {
            // `::text`: a `bpchar` column compares without its padding, as text does.
            let cast = if p.ty == PgType::Text { "::text" } else { "" };
            select.push(format!("t.{}{cast}", ident(p.name)));
        }
        if !absent.is_empty() {
            let nulls: Vec<String> = absent
                .iter()
                .map(|a| format!("t.{} IS NULL", ident(a)))
                .collect();
            select.push(format!("({})", nulls.join(" AND ")));
        }
        let fields = select.len();
        let mut out = vec![Seen::Gone; pairs.len()];
        let mut mine = Vec::new();
        let mut judge = |stored: &[Option<(usize, usize)>], buf: &[u8]| -> Result<()> {
            let at = |f: usize| stored[f].map(|(s, e)| &buf[s..e]);
            let id = i64::from_be_bytes(
                at(0)
                    .and_then(|b| b.try_into().ok())
                    .context("a stored record without an id")?,
            );
            let first = sorted.partition_point(|&x| x < id);
            for k in first..sorted.len() {
                if sorted[k] != id {
                    break;
                }
                let i = order[k];
                let r = pairs[i].1;
                let mut value = |j: usize| -> Result<bool> {
                    mine.clear();
                    encode(ins, all[j], r, &mut mine)?;
                    Ok(order::same(all[j].ty, binary::field(&mine), at(1 + j)))
                };
                let mut key = true;
                for j in 0..keys.len() {
                    if !value(j)? {
                        key = false;
                        break;
                    }
                }
                out[i] = if !key {
                    Seen::Other
                } else {
                    match wants {
                        Wants::Key => Seen::Same {
                            newer: None,
                            equal: None,
                        },
                        Wants::Version => {
                            let j = keys.len();
                            mine.clear();
                            encode(ins, all[j], r, &mut mine)?;
                            // As `CASE WHEN stored IS NULL THEN newer WHEN mine > stored THEN
                            // newer WHEN mine = stored THEN equal ELSE older END`.
                            let newer = match (binary::field(&mine), at(1 + j)) {
                                (_, None) => std::cmp::Ordering::Greater,
                                (None, Some(_)) => std::cmp::Ordering::Less,
                                (Some(a), Some(b)) => {
                                    order::order(all[j].ty, a, b).with_context(|| {
                                        format!(
                                            "the version column {} cannot be ordered",
                                            all[j].name
                                        )
                                    })?
                                }
                            };
                            Seen::Same {
                                newer: Some(newer),
                                equal: None,
                            }
                        }
                        Wants::Content => {
                            let mut equal = true;
                            for j in keys.len()..all.len() {
                                if !value(j)? {
                                    equal = false;
                                    break;
                                }
                            }
                            if equal && !absent.is_empty() {
                                equal = at(fields - 1) == Some(&[1u8][..]);
                            }
                            Seen::Same {
                                newer: None,
                                equal: Some(equal),
                            }
                        }
                    }
                };
            }
            Ok(())
        };
        let from = format!("{} FROM {} t", select.join(", "), ident(ins.table));
        let client = self.runs.c()?;
        by_id(client, spans == [None], |client| {
            for span in spans {
                let sql = match span {
                    Some((lo, hi)) => format!("SELECT {from} WHERE t._id BETWEEN {lo} AND {hi}"),
                    None => {
                        let mut ids: Vec<String> = sorted.iter().map(i64::to_string).collect();
                        ids.dedup();
                        format!("SELECT {from} WHERE t._id IN ({})", ids.join(","))
                    }
                };
                let reader = client
                    .copy_out(&format!("COPY ({sql}) TO STDOUT (FORMAT binary)"))
                    .context("reading the stored records to compare")?;
                binary::read_raw_rows(reader, fields, &mut judge)
                    .context("reading the stored records to compare")?;
            }
            Ok(())
        })?;
        Ok(out)
    }
}
