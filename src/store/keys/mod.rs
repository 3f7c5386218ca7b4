//! Record keys (R-record-key), for every backend and the dry run: a persistent key index in
//! the store, probed per chunk, and what a record whose key is stored does.
//!
//! A unique index over the key columns (or a key hash) in the table itself makes every insert a
//! random B-tree update — measured on the 6.8 M-row set, 7× (SQLite, integer) to 25× (three
//! TEXT columns) and 8× (PostgreSQL) slower — and loading every stored key into memory makes a
//! one-file run into a big table pay for the whole table. So the index is log-structured:
//!
//! - Workers hash each record's key (64-bit, stable, stored unindexed in the table's `_key`).
//! - The *tail* — keyed records stored after the table's `covered` mark — is held in memory by
//!   every writer (read from the table when it starts: at most `FLUSH` entries).
//! - Everything up to `covered` is in *runs* (`runs.rs`): immutable sorted sets of
//!   `(hash, record id)` in the store's own tables, found by one small row lookup per hash.
//! - A hash match is always compared with the stored record by the store, exactly (key values
//!   in their column types, and the version or all values where `on_key` needs them). The index
//!   can hold stale entries (a record replaced), never miss a stored key.
//!
//! `table.rs` keeps one table's index (probing, reading runs whole when that is cheaper,
//! flushing the tail, merging runs); `decide.rs` applies `on_key`; `map.rs` and `index.rs` are
//! the in-memory forms. Each backend keeps the tail in step with other writers its own way
//! (SQLite: one writer at a time, `_id` after the last seen; PostgreSQL: a lock per table and a
//! log of the ids each group stored) and answers `RunStore` and `Compare`.

pub mod decide;
pub mod def;
mod delta;
pub mod index;
pub mod map;
pub mod rekey;
pub mod runs;
pub mod table;

pub use decide::{cell_at, decide, Plan, Rule, Seen, Wants};
pub use table::{RunStore, TableKeys};

use crate::record::Chunk;
use anyhow::Result;

/// Default memory for key entries besides the tail: 16 M entries (about 200 MB at most).
pub const DEFAULT_CAP: usize = 16 << 20;

/// The store's answer for stored records a chunk's rows may share a key with.
pub trait Compare {
    /// For each `(stored record id, chunk row)`: what that record is to the row.
    fn compare(&mut self, pairs: &[(i64, usize)]) -> Result<Vec<Seen>>;
    /// The key index's runs, over the same connection.
    fn runs(&mut self) -> &mut dyn RunStore;
}

/// What a chunk's records do: finds each row's stored record, then applies the rule.
pub fn plan_chunk(
    tk: &mut TableKeys,
    store: &mut dyn Compare,
    chunk: &Chunk,
    key_cells: &[Option<usize>],
    rule: &Rule,
) -> Result<Plan> {
    let (stored, absent) = find(tk, store, chunk)?;
    let mut plan = decide(chunk, key_cells, rule, &stored);
    // New to the index: new to memory when looked up, and to the rows stored before it here.
    for (a, &r) in plan.absent.iter_mut().zip(&plan.insert) {
        *a &= absent[r as usize];
    }
    Ok(plan)
}

/// Each row's stored record with the same key, if any, and how it compares: memory, then cold
/// runs, every match compared by the store.
pub fn lookup(tk: &mut TableKeys, store: &mut dyn Compare, chunk: &Chunk) -> Result<Found> {
    Ok(find(tk, store, chunk)?.0)
}

/// What the index learns of a stored chunk: given the ids its rows got (in `plan.insert`
/// order) and the coordinate of each, the records added `(coordinate, hash, id, new to the
/// index)` and those that replaced others `(coordinate, hash, old id, new id)`.
pub type Learnt = (Vec<(i64, i64, i64, bool)>, Vec<(i64, i64, i64, i64)>);

pub fn learnt(
    plan: &Plan,
    chunk: &Chunk,
    ids: impl Iterator<Item = i64>,
    at: impl Fn(i64) -> i64,
) -> Result<Learnt> {
    let mut added = Vec::with_capacity(plan.insert.len());
    let mut swapped = Vec::with_capacity(plan.replaces.len());
    // `replaces` is in `insert` order.
    let mut replaces = plan.replaces.iter().peekable();
    let mut ids = ids;
    for (k, &r) in plan.insert.iter().enumerate() {
        let id = ids
            .next()
            .ok_or_else(|| anyhow::anyhow!("fewer ids than rows"))?;
        let h = chunk.keys[r as usize];
        match replaces.next_if(|&&(slot, _)| slot == k) {
            Some(&(_, old)) => swapped.push((at(id), h, old, id)),
            None => added.push((at(id), h, id, plan.absent[k])),
        }
    }
    Ok((added, swapped))
}

/// Per row of a chunk: the stored record with its key, if any, and how it compares.
pub type Found = Vec<Option<(i64, Seen)>>;

/// `lookup`, and per row whether memory held no entry of its hash.
fn find(tk: &mut TableKeys, store: &mut dyn Compare, chunk: &Chunk) -> Result<(Found, Vec<bool>)> {
    let n = chunk.rows();
    let found = tk.find(store.runs(), &chunk.keys, &vec![true; n])?;
    let mut stored: Vec<Option<(i64, Seen)>> = vec![None; n];
    judge(store, &found.candidates, &mut stored)?;
    // Rows whose matches in memory were other keys may still have theirs in a cold run.
    let again: Vec<usize> = (0..n)
        .filter(|&r| stored[r].is_none() && !found.probed[r] && !found.candidates[r].is_empty())
        .collect();
    if !again.is_empty() {
        let more = tk.find_cold(store.runs(), &chunk.keys, &again)?;
        judge(store, &more, &mut stored)?;
    }
    Ok((stored, found.absent))
}

/// Compares every candidate with its row; keeps, per row, the newest record with its key.
fn judge(
    cmp: &mut dyn Compare,
    candidates: &[Vec<i64>],
    stored: &mut [Option<(i64, Seen)>],
) -> Result<()> {
    let mut pairs: Vec<(i64, usize)> = Vec::new();
    for (r, ids) in candidates.iter().enumerate() {
        for (i, &id) in ids.iter().enumerate() {
            if !ids[..i].contains(&id) {
                pairs.push((id, r));
            }
        }
    }
    if pairs.is_empty() {
        return Ok(());
    }
    let seen = cmp.compare(&pairs)?;
    for (&(id, r), s) in pairs.iter().zip(seen) {
        if matches!(s, Seen::Same { .. }) && stored[r].is_none_or(|(old, _)| id > old) {
            stored[r] = Some((id, s));
        }
    }
    Ok(())
}
