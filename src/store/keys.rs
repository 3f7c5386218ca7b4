//! Record keys decided in memory (R-record-key), for every backend.
//!
//! A unique index over the key columns, or even over a key hash, makes every insert a random
//! B-tree update: on the 6.8 M-row benchmark 7× (SQLite, integer index) to 25× (SQLite, three
//! text columns) and 8× (PostgreSQL, unique index) slower. Instead the workers hash each
//! record's key (64-bit, stored unindexed in `_key`) and the writer keeps `hash → record id` in
//! memory (`KeyIndex`). A new key costs a lookup and an insert in memory; a hash seen before is
//! checked exactly against the stored record, so different keys sharing a hash are both stored.
//!
//! The index is only right while nobody else stores keyed records behind its back: each backend
//! keeps it in step its own way (SQLite: one writer at a time, topped up with the records
//! stored since; PostgreSQL: a lock per table and a log of who stored which ids,
//! `postgres/keys.rs`).

use crate::record::{Cell, Chunk};
use anyhow::Result;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Key hashes are already well mixed: use them as their own hash.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = v as u64;
    }
}

pub type IdMap<V> = HashMap<i64, V, BuildHasherDefault<IdHasher>>;

/// Buckets of the sorted part, by a hash's top bits.
const BUCKET_BITS: u32 = 16;
const LOW_BITS: u32 = 64 - BUCKET_BITS;
/// An id's bits kept next to the hash; the rest go to `KeyMap::high`.
const ID_LOW_BITS: u32 = 16;
/// Ids the compact form holds: `0 ≤ id < 2^48`.
const ID_LIMIT: i64 = 1 << (32 + ID_LOW_BITS);
/// Recent entries kept in a hash map before they are merged into the sorted part.
const MIN_DELTA: usize = 1 << 18;

/// A map from key hash to record id in 12 bytes per entry, where a hash map takes 16 bytes plus
/// its headroom (up to twice that while it grows): most entries sit in two arrays sorted by hash,
/// found through a directory of their top 16 bits; new ones go to a small hash map, merged into
/// the arrays in place when it reaches a sixteenth of them. 6.8 M keys take 82 MB.
#[derive(Default)]
pub struct KeyMap {
    /// Sorted part: bucket `b` (a hash's top 16 bits) holds entries `dir[b]..dir[b + 1]`.
    dir: Vec<u32>,
    /// Per sorted entry: the hash's low 48 bits, then the id's low 16 bits.
    low: Vec<u64>,
    /// Per sorted entry: the id's bits above the low 16.
    high: Vec<u32>,
    /// Recent entries.
    delta: IdMap<i64>,
    /// Entries whose id the compact form cannot hold (negative, or 2^48 and above).
    wide: IdMap<i64>,
}

fn bucket(h: i64) -> usize {
    (h as u64 >> LOW_BITS) as usize
}

fn low_hash(h: i64) -> u64 {
    h as u64 & ((1 << LOW_BITS) - 1)
}

impl KeyMap {
    pub fn len(&self) -> usize {
        self.low.len() + self.delta.len() + self.wide.len()
    }

    /// Where a hash sits in the sorted part.
    fn position(&self, h: i64) -> Option<usize> {
        if self.low.is_empty() {
            return None;
        }
        let b = bucket(h);
        let (from, to) = (self.dir[b] as usize, self.dir[b + 1] as usize);
        let want = low_hash(h);
        let slice = &self.low[from..to];
        let i = slice.partition_point(|&x| x >> ID_LOW_BITS < want);
        (i < slice.len() && slice[i] >> ID_LOW_BITS == want).then_some(from + i)
    }

    pub fn get(&self, h: i64) -> Option<i64> {
        if let Some(&id) = self.delta.get(&h) {
            return Some(id);
        }
        if let Some(i) = self.position(h) {
            let lo = (self.low[i] & ((1 << ID_LOW_BITS) - 1)) as i64;
            return Some(((self.high[i] as i64) << ID_LOW_BITS) | lo);
        }
        self.wide.get(&h).copied()
    }

    pub fn contains(&self, h: i64) -> bool {
        self.get(h).is_some()
    }

    /// Adds a hash that is not in the map.
    pub fn insert(&mut self, h: i64, id: i64) {
        debug_assert!(!self.contains(h));
        if !(0..ID_LIMIT).contains(&id) {
            self.wide.insert(h, id);
            return;
        }
        self.delta.insert(h, id);
        if self.delta.len() >= MIN_DELTA.max(self.low.len() / 16) {
            self.merge();
        }
    }

    /// Removes these hashes (those present): from the recent entries at once, from the sorted
    /// part in one pass.
    pub fn remove_all(&mut self, hashes: &[i64]) {
        let mut sorted = Vec::new();
        for &h in hashes {
            if self.delta.remove(&h).is_none() && self.wide.remove(&h).is_none() {
                sorted.push(h);
            }
        }
        if sorted.is_empty() || self.low.is_empty() {
            return;
        }
        let gone: std::collections::HashSet<usize> =
            sorted.iter().filter_map(|&h| self.position(h)).collect();
        if gone.is_empty() {
            return;
        }
        let mut counts = vec![0u32; 1 << BUCKET_BITS];
        let mut w = 0;
        for (count, bounds) in counts.iter_mut().zip(self.dir.windows(2)) {
            for i in bounds[0] as usize..bounds[1] as usize {
                if !gone.contains(&i) {
                    self.low[w] = self.low[i];
                    self.high[w] = self.high[i];
                    *count += 1;
                    w += 1;
                }
            }
        }
        self.low.truncate(w);
        self.high.truncate(w);
        self.set_dir(&counts);
    }

    fn set_dir(&mut self, counts: &[u32]) {
        self.dir.clear();
        self.dir.push(0);
        let mut at = 0u32;
        for &c in counts {
            at += c;
            self.dir.push(at);
        }
    }

    /// Moves the recent entries into the sorted part: merged from the back, in place, so memory
    /// grows by the new entries only.
    fn merge(&mut self) {
        let mut new: Vec<(u64, i64)> = self.delta.drain().map(|(h, id)| (h as u64, id)).collect();
        new.sort_unstable_by_key(|&(h, _)| h);
        let old = self.low.len();
        let total = old + new.len();
        self.low.resize(total, 0);
        self.high.resize(total, 0);
        let mut counts = vec![0u32; 1 << BUCKET_BITS];
        // The old entries' buckets, walked from the last down.
        let mut b = (1usize << BUCKET_BITS) - 1;
        let (mut i, mut j, mut k) = (old, new.len(), total);
        while j > 0 {
            let (nh, nid) = new[j - 1];
            let from_old = i > 0 && {
                while b > 0 && self.dir[b] as usize >= i {
                    b -= 1;
                }
                let oh = ((b as u64) << LOW_BITS) | (self.low[i - 1] >> ID_LOW_BITS);
                oh > nh
            };
            k -= 1;
            if from_old {
                i -= 1;
                self.low[k] = self.low[i];
                self.high[k] = self.high[i];
                counts[b] += 1;
            } else {
                j -= 1;
                self.low[k] = (low_hash(nh as i64) << ID_LOW_BITS) | (nid as u64 & 0xFFFF);
                self.high[k] = (nid >> ID_LOW_BITS) as u32;
                counts[bucket(nh as i64)] += 1;
            }
        }
        // The old entries below the last new one stay where they are.
        if i > 0 {
            for (bb, c) in counts.iter_mut().enumerate() {
                let (from, to) = (self.dir[bb] as usize, self.dir[bb + 1] as usize);
                *c += to.min(i).saturating_sub(from) as u32;
            }
        }
        self.set_dir(&counts);
    }
}

/// The key hashes of a dataset's stored records, each with the id of a record that has it, and
/// what the open transaction added (so a file or the group can be undone).
#[derive(Default)]
pub struct KeyIndex {
    map: KeyMap,
    /// Further records whose different keys share a hash with the one in `map`.
    more: IdMap<Vec<i64>>,
    /// Hashes added since the last commit, by the current file and before it: (hash, in_more).
    added: Vec<(i64, bool)>,
    /// `added.len()` when the current file started.
    file_mark: usize,
}

impl KeyIndex {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    fn candidates(&self, h: i64) -> impl Iterator<Item = i64> + '_ {
        let first = self.map.get(h);
        self.more_after(h, first)
    }

    /// The map's id of each hash (one lookup per hash: it is the costly part, a few cache
    /// misses), to give `more_after` and `dedupe`.
    pub fn firsts(&self, hashes: &[i64]) -> Vec<Option<i64>> {
        hashes.iter().map(|&h| self.map.get(h)).collect()
    }

    /// The ids of a hash given the map's (`first`, looked up once): it, then those in `more`.
    pub fn more_after(&self, h: i64, first: Option<i64>) -> impl Iterator<Item = i64> + '_ {
        let more = first.and_then(|_| self.more.get(&h));
        first.into_iter().chain(more.into_iter().flatten().copied())
    }

    /// Adds `id` under `h`, whose id in the map is `first`; whether it went to `more`.
    fn put(&mut self, h: i64, first: Option<i64>, id: i64) -> bool {
        if first.is_some() {
            self.more.entry(h).or_default().push(id);
            true
        } else {
            self.map.insert(h, id);
            false
        }
    }

    /// A record stored by this transaction (undone with it).
    fn add(&mut self, h: i64, first: Option<i64>, id: i64) {
        let in_more = self.put(h, first, id);
        self.added.push((h, in_more));
    }

    /// A record already committed (by anyone); nothing if it is known.
    pub fn add_committed(&mut self, h: i64, id: i64) {
        let first = self.map.get(h);
        if !self.more_after(h, first).any(|x| x == id) {
            self.put(h, first, id);
        }
    }

    /// The current file is kept: the next one starts here.
    pub fn file_done(&mut self) {
        self.file_mark = self.added.len();
    }

    /// The transaction committed: nothing before this point can be undone any more.
    pub fn committed(&mut self) {
        self.added.clear();
        self.file_mark = 0;
    }

    /// Forgets what the current file added (its savepoint was rolled back).
    pub fn undo_file(&mut self) {
        let mut gone = Vec::new();
        while self.added.len() > self.file_mark {
            let (h, in_more) = self.added.pop().expect("longer than the mark");
            if in_more {
                if let Some(v) = self.more.get_mut(&h) {
                    v.pop();
                    if v.is_empty() {
                        self.more.remove(&h);
                    }
                }
            } else {
                gone.push(h);
            }
        }
        self.map.remove_all(&gone);
    }

    /// Forgets everything the transaction added (it was rolled back).
    pub fn undo_group(&mut self) {
        self.file_mark = 0;
        self.undo_file();
    }
}

/// The ids a chunk's kept rows get, in order: runs of (first, count).
pub struct ChunkIds<'a>(pub &'a [(i64, u64)]);

impl ChunkIds<'_> {
    /// The id of the `k`-th kept row.
    fn id(&self, mut k: u64) -> Option<i64> {
        for &(first, n) in self.0 {
            if k < n {
                return Some(first + k as i64);
            }
            k -= n;
        }
        None
    }

    /// Which kept row an id is, if it is one of these.
    fn position(&self, id: i64) -> Option<u64> {
        let mut before = 0;
        for &(first, n) in self.0 {
            if (first..first + n as i64).contains(&id) {
                return Some(before + (id - first) as u64);
            }
            before += n;
        }
        None
    }
}

/// Picks the rows of a chunk whose key is new; counts the others in `dups`. Kept rows take
/// their ids from `ids` in order. `stored_same(id, row)` says whether the stored record `id`
/// has the key of chunk row `row`. `firsts`, if the caller looked the chunk's hashes up before
/// it (`KeyIndex::firsts`), saves looking them up again: hashes this chunk adds are then
/// remembered in a small map of its own.
pub fn dedupe(
    idx: &mut KeyIndex,
    chunk: &Chunk,
    key_cols: &[Option<usize>],
    ids: &ChunkIds,
    firsts: Option<&[Option<i64>]>,
    mut stored_same: impl FnMut(i64, usize) -> Result<bool>,
    dups: &mut u64,
) -> Result<Vec<u32>> {
    let mut kept: Vec<u32> = Vec::with_capacity(chunk.rows());
    let next_id = |kept: &[u32]| {
        ids.id(kept.len() as u64)
            .ok_or_else(|| anyhow::anyhow!("fewer record ids than rows"))
    };
    // Sized once: growing it row by row cost a rehash every doubling, on the writer's path.
    let mut this_chunk: IdMap<i64> = match firsts {
        Some(_) => IdMap::with_capacity_and_hasher(chunk.rows(), Default::default()),
        None => IdMap::default(),
    };
    for r in 0..chunk.rows() {
        let h = chunk.keys[r];
        let first = match firsts {
            Some(f) => f[r].or_else(|| this_chunk.get(&h).copied()),
            None => idx.map.get(h),
        };
        if first.is_none() {
            // The common case: a key never seen.
            let id = next_id(&kept)?;
            idx.add(h, None, id);
            if firsts.is_some() {
                this_chunk.insert(h, id);
            }
            kept.push(r as u32);
            continue;
        }
        let mut dup = false;
        for other in idx.more_after(h, first).collect::<Vec<_>>() {
            let same = match ids.position(other) {
                Some(k) if (k as usize) < kept.len() => {
                    same_key_in_chunk(chunk, key_cols, kept[k as usize] as usize, r)
                }
                _ => stored_same(other, r)?,
            };
            if same {
                dup = true;
                break;
            }
        }
        if dup {
            *dups += 1;
            continue;
        }
        idx.add(h, first, next_id(&kept)?);
        kept.push(r as u32);
    }
    Ok(kept)
}

/// Chunk row `row`'s cell of a key column (`None`: the column is not in the file: NULL).
pub fn cell_at(chunk: &Chunk, row: usize, col: Option<usize>) -> Cell {
    col.map_or(Cell::Null, |c| chunk.row(row)[c])
}

fn same_key_in_chunk(chunk: &Chunk, key_cols: &[Option<usize>], a: usize, b: usize) -> bool {
    key_cols.iter().all(|&c| {
        let (x, y) = (cell_at(chunk, a, c), cell_at(chunk, b, c));
        match (x, y) {
            (Cell::Text { .. }, Cell::Text { .. }) => chunk.text(x) == chunk.text(y),
            (Cell::Real(p), Cell::Real(q)) => p == q,
            _ => x == y,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk of one-column text rows with the given (forced) key hashes.
    fn chunk(rows: &[(&str, i64)]) -> Chunk {
        let mut c = Chunk::new(1);
        for (i, (v, h)) in rows.iter().enumerate() {
            c.push_row(i as u64 + 2, v, &[Some((0, v.len()))]);
            c.keys.push(*h);
        }
        c
    }

    #[test]
    fn equal_hashes_are_checked_against_the_values() {
        let mut idx = KeyIndex::default();
        // "a" and "b" collide on purpose; the second "a" is a true duplicate.
        let c = chunk(&[("a", 7), ("b", 7), ("a", 7), ("c", 9)]);
        let mut dups = 0;
        let ids = ChunkIds(&[(100, 4)]);
        let kept = dedupe(
            &mut idx,
            &c,
            &[Some(0)],
            &ids,
            None,
            |_, _| Ok(false),
            &mut dups,
        )
        .unwrap();
        assert_eq!(kept, [0, 1, 3]);
        assert_eq!(dups, 1);
        assert_eq!(idx.candidates(7).collect::<Vec<_>>(), [100, 101]);
        idx.file_done();
        // A later chunk, its ids in two runs: hash 7 is checked against the stored records.
        let c2 = chunk(&[("b", 7), ("d", 7), ("e", 11)]);
        let mut dups = 0;
        let ids = ChunkIds(&[(103, 1), (500, 2)]);
        // The caller looked the hashes up first: the same answer.
        let firsts = idx.firsts(&c2.keys);
        let kept = dedupe(
            &mut idx,
            &c2,
            &[Some(0)],
            &ids,
            Some(&firsts),
            |id, r| Ok(id == 101 && r == 0),
            &mut dups,
        )
        .unwrap();
        assert_eq!(kept, [1, 2]);
        assert_eq!(dups, 1);
        assert_eq!(idx.candidates(11).collect::<Vec<_>>(), [500]);
        // Undoing the file forgets only what it added.
        idx.undo_file();
        assert_eq!(idx.candidates(7).collect::<Vec<_>>(), [100, 101]);
        assert_eq!(idx.candidates(9).collect::<Vec<_>>(), [102]);
        assert!(!idx.map.contains(11));
        idx.undo_group();
        assert_eq!(idx.len(), 0);
    }

    #[test]
    fn hashes_looked_up_before_still_find_repeats_within_the_chunk() {
        let mut idx = KeyIndex::default();
        // 13 is new to the index: its repeats are found among the chunk's own rows.
        let c = chunk(&[("f", 13), ("f", 13), ("g", 13), ("g", 13), ("h", 5)]);
        let firsts = idx.firsts(&c.keys);
        assert_eq!(firsts, [None; 5]);
        let mut dups = 0;
        let ids = ChunkIds(&[(1, 5)]);
        let never = |_, _| -> Result<bool> { panic!("nothing is stored yet") };
        let kept = dedupe(
            &mut idx,
            &c,
            &[Some(0)],
            &ids,
            Some(&firsts),
            never,
            &mut dups,
        );
        assert_eq!(kept.unwrap(), [0, 2, 4]);
        assert_eq!(dups, 2);
        assert_eq!(idx.candidates(13).collect::<Vec<_>>(), [1, 2]);
    }

    /// A deterministic, well-mixed sequence of hashes.
    fn hashes(n: usize, seed: u64) -> Vec<i64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) as i64
            })
            .collect()
    }

    #[test]
    fn the_compact_map_finds_every_id_across_merges_and_removals() {
        let mut m = KeyMap::default();
        let hs = hashes(3 * MIN_DELTA + 1234, 1);
        let id = |i: usize| -> i64 {
            match i % 5 {
                0 => i as i64,
                1 => (1 << 40) + i as i64,
                2 => ID_LIMIT - 1 - i as i64,
                3 => -(i as i64) - 1,     // kept aside
                _ => ID_LIMIT + i as i64, // kept aside
            }
        };
        for (i, &h) in hs.iter().enumerate() {
            m.insert(h, id(i));
        }
        assert!(!m.low.is_empty(), "merged into the sorted part");
        assert_eq!(m.len(), hs.len());
        for (i, &h) in hs.iter().enumerate() {
            assert_eq!(m.get(h), Some(id(i)), "entry {i}");
        }
        for &h in &hashes(1000, 2) {
            assert_eq!(m.get(h), None);
        }
        // Hashes at the edges of buckets and of the value range.
        for (h, v) in [(i64::MIN, 1), (i64::MAX, 2), (0, 3), (-1, 4), (1 << 48, 5)] {
            m.insert(h, v);
        }
        m.merge();
        for (h, v) in [(i64::MIN, 1), (i64::MAX, 2), (0, 3), (-1, 4), (1 << 48, 5)] {
            assert_eq!(m.get(h), Some(v));
        }
        // Every other entry removed, from both parts.
        let gone: Vec<i64> = hs.iter().step_by(2).copied().collect();
        m.remove_all(&gone);
        for (i, &h) in hs.iter().enumerate() {
            assert_eq!(m.get(h), (i % 2 == 1).then(|| id(i)), "entry {i}");
        }
        assert_eq!(m.len(), hs.len() / 2 + 5);
    }
}
