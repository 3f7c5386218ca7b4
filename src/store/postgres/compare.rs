//! The exact comparison of hash matches with stored records, by the database: key values in
//! their column types, and the version or every value where `on_key` needs them — one statement
//! per cluster of ids, the chunk's values sent as binary arrays.

use super::binary::{self, PgType};
use super::keys::{ranges, Runs, MAX_RANGES, RANGE_GAP};
use super::tables::{by_id, ident, index_ids, within, TableInfo};
use crate::record::Cell;
use crate::store::keys::{Compare, RunStore, Seen, Wants};
use crate::store::ChunkInsert;
use anyhow::{Context, Result};
use std::collections::HashMap;

/// A raw binary parameter (ferry's own encoding of a PostgreSQL array).
#[derive(Debug)]
struct Raw(Vec<u8>);

impl postgres::types::ToSql for Raw {
    fn to_sql(
        &self,
        _: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(postgres::types::IsNull::No)
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

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
        // Per cluster of close ids, one range of the `_id` index; ids spread wider are looked
        // up one by one in a single statement.
        let mut spans: Vec<Option<(i64, i64)>> = ranges(
            order.iter().map(|&i| (pairs[i].0, pairs[i].0)).collect(),
            RANGE_GAP,
        )
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
        let all: Vec<&Part> = keys.iter().chain(extra.iter()).collect();
        let unnest: Vec<String> = std::iter::once("$1::int8[]".to_string())
            .chain(
                all.iter()
                    .enumerate()
                    .map(|(j, p)| format!("${}::{}[]", j + 2, p.ty.name())),
            )
            .collect();
        let names: Vec<String> = (1..=all.len()).map(|j| format!("p{j}")).collect();
        let same = |from: usize, parts: &[Part]| -> String {
            let v: Vec<String> = parts
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    format!(
                        "t.{} IS NOT DISTINCT FROM s.p{}",
                        ident(p.name),
                        from + j + 1
                    )
                })
                .collect();
            if v.is_empty() {
                "true".into()
            } else {
                v.join(" AND ")
            }
        };
        let key_eq = same(0, &keys);
        let second = match wants {
            Wants::Key => "0".to_string(),
            Wants::Version => {
                let v = ident(extra[0].name);
                let p = format!("s.p{}", keys.len() + 1);
                format!(
                    "CASE WHEN t.{v} IS NULL THEN 1 WHEN {p} > t.{v} THEN 1 WHEN {p} = t.{v} \
                     THEN 0 ELSE -1 END"
                )
            }
            Wants::Content => {
                let mut eq = same(keys.len(), &extra);
                for a in &absent {
                    eq.push_str(&format!(" AND t.{} IS NULL", ident(a)));
                }
                format!("CASE WHEN {eq} THEN 1 ELSE 0 END")
            }
        };
        let mut out = vec![Seen::Gone; pairs.len()];
        let client = self.runs.c()?;
        by_id(client, spans == [None], |client| {
            for span in spans {
                let group: Vec<usize> = order
                    .iter()
                    .copied()
                    .filter(|&i| span.is_none_or(|(lo, hi)| (lo..=hi).contains(&pairs[i].0)))
                    .collect();
                let mut arrays = vec![binary::array_header(PgType::Int8, group.len())];
                for &i in &group {
                    binary::int8(&mut arrays[0], pairs[i].0);
                }
                for part in &all {
                    let mut a = binary::array_header(part.ty, group.len());
                    for &i in &group {
                        encode(ins, part, pairs[i].1, &mut a)?;
                    }
                    arrays.push(a);
                }
                let sql = within(
                    &format!(
                        "SELECT s.i, {key_eq}, {second} FROM {} t JOIN unnest({}) WITH \
                         ORDINALITY AS s(id, {}, i) ON t._id = s.id WHERE true",
                        ident(ins.table),
                        unnest.join(", "),
                        names.join(", "),
                    ),
                    span,
                );
                let params: Vec<Raw> = arrays.into_iter().map(Raw).collect();
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                for row in client
                    .query(&sql, &refs)
                    .context("comparing records with the stored ones")?
                {
                    let ordinal: i64 = row.get(0);
                    let i = group[ordinal as usize - 1];
                    let key: bool = row.get(1);
                    let x: i32 = row.get(2);
                    out[i] = if !key {
                        Seen::Other
                    } else {
                        match wants {
                            Wants::Key => Seen::Same {
                                newer: None,
                                equal: None,
                            },
                            Wants::Version => Seen::Same {
                                newer: Some(x.cmp(&0)),
                                equal: None,
                            },
                            Wants::Content => Seen::Same {
                                newer: None,
                                equal: Some(x == 1),
                            },
                        }
                    };
                }
            }
            Ok(())
        })?;
        Ok(out)
    }
}
