//! `KeyMap`: record-key hash → record id in 12 bytes per entry, the in-memory form of a key
//! index (`index.rs` adds what a transaction can undo).

use super::delta::Delta;
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
/// The recent entries are merged into the sorted part when they are this share of it: each
/// merge moves every entry, so a larger share merges less often (and holds more in the map).
const DELTA_SHARE: usize = 6;

/// A map from key hash to record id in 12 bytes per entry, where a hash map takes 16 bytes plus
/// its headroom (up to twice that while it grows): most entries sit in two arrays sorted by hash,
/// found through a directory of their top 16 bits; new ones go to a small hash map, merged into
/// the arrays in place when it reaches a sixth of them. 6.8 M keys take 82 MB, and up to a
/// sixth more while the recent entries wait.
#[derive(Default)]
pub struct KeyMap {
    /// Sorted part: bucket `b` (a hash's top 16 bits) holds entries `dir[b]..dir[b + 1]`.
    dir: Vec<u32>,
    /// Per sorted entry: the hash's low 48 bits, then the id's low 16 bits.
    low: Vec<u64>,
    /// Per sorted entry: the id's bits above the low 16.
    high: Vec<u32>,
    /// Recent entries.
    delta: Delta,
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

    /// Where a hash sits in the sorted part. Hashes are uniform, so within its bucket an entry
    /// sits about where its value says: the search starts there and walks (a cache line or two)
    /// instead of halving the bucket (a miss per step).
    fn position(&self, h: i64) -> Option<usize> {
        if self.low.is_empty() {
            return None;
        }
        let b = bucket(h);
        let (from, to) = (self.dir[b] as usize, self.dir[b + 1] as usize);
        if from == to {
            return None;
        }
        let want = low_hash(h);
        let at = |i: usize| self.low[i] >> ID_LOW_BITS;
        let len = to - from;
        let mut i = from + ((want as u128 * len as u128) >> LOW_BITS) as usize;
        if at(i) < want {
            while i + 1 < to && at(i + 1) <= want {
                i += 1;
            }
        } else {
            while i > from && at(i - 1) >= want {
                i -= 1;
            }
        }
        (at(i) == want).then_some(i)
    }

    pub fn get(&self, h: i64) -> Option<i64> {
        if let Some(id) = self.delta.get(h) {
            return Some(id);
        }
        if let Some(i) = self.position(h) {
            let lo = (self.low[i] & ((1 << ID_LOW_BITS) - 1)) as i64;
            return Some(((self.high[i] as i64) << ID_LOW_BITS) | lo);
        }
        self.wide.get(&h).copied()
    }

    /// `get` of many hashes. The sorted part is far bigger than the caches, so each lookup
    /// waits for memory; the entries where they are expected are touched first, in a loop whose
    /// reads do not depend on each other (the processor overlaps them), then looked up.
    pub fn get_many(&self, hashes: &[i64]) -> Vec<Option<i64>> {
        self.delta.touch(hashes);
        if !self.low.is_empty() {
            let mut touched = 0u64;
            for &h in hashes {
                let b = bucket(h);
                let (from, to) = (self.dir[b] as usize, self.dir[b + 1] as usize);
                if from < to {
                    let len = to - from;
                    let i = from + ((low_hash(h) as u128 * len as u128) >> LOW_BITS) as usize;
                    touched ^= self.low[i];
                }
            }
            std::hint::black_box(touched);
        }
        hashes.iter().map(|&h| self.get(h)).collect()
    }

    /// Touches where these hashes would be added (see `get_many`).
    pub fn touch(&self, hashes: &[i64]) {
        self.delta.touch(hashes);
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
        if self.delta.len() >= MIN_DELTA.max(self.low.len() / DELTA_SHARE) {
            self.merge();
        }
    }

    /// Gives a hash present in the map another id (or adds it).
    pub fn set(&mut self, h: i64, id: i64) {
        if let Some(v) = self.delta.get_mut(h) {
            *v = id;
            return;
        }
        if let Some(i) = self.position(h) {
            if (0..ID_LIMIT).contains(&id) {
                self.low[i] = (self.low[i] & !0xFFFF) | (id as u64 & 0xFFFF);
                self.high[i] = (id >> ID_LOW_BITS) as u32;
                return;
            }
            self.remove_all(&[h]);
        } else {
            self.wide.remove(&h);
        }
        self.insert(h, id);
    }

    /// Adds entries sorted by hash (as unsigned), none of them in the map: merged into the
    /// sorted part at once, without the hash map on the way.
    pub fn extend_sorted(&mut self, entries: &[(u64, i64)]) {
        let mut compact = Vec::with_capacity(entries.len());
        for &(h, id) in entries {
            debug_assert!(!self.contains(h as i64));
            if (0..ID_LIMIT).contains(&id) {
                compact.push((h, id));
            } else {
                self.wide.insert(h as i64, id);
            }
        }
        self.merge_in(compact);
    }

    /// Every entry in hash order (as unsigned).
    pub fn for_each_sorted(
        &self,
        mut f: impl FnMut(u64, i64) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut side: Vec<(u64, i64)> = self
            .delta
            .iter()
            .chain(self.wide.iter().map(|(&h, &id)| (h, id)))
            .map(|(h, id)| (h as u64, id))
            .collect();
        side.sort_unstable();
        let mut side = side.into_iter().peekable();
        for b in 0..self.dir.len().saturating_sub(1) {
            for i in self.dir[b] as usize..self.dir[b + 1] as usize {
                let h = ((b as u64) << LOW_BITS) | (self.low[i] >> ID_LOW_BITS);
                while let Some(&(sh, sid)) = side.peek().filter(|e| e.0 < h) {
                    f(sh, sid)?;
                    side.next();
                }
                let id = ((self.high[i] as i64) << ID_LOW_BITS) | (self.low[i] & 0xFFFF) as i64;
                f(h, id)?;
            }
        }
        for (sh, sid) in side {
            f(sh, sid)?;
        }
        Ok(())
    }

    /// Removes these hashes (those present): from the recent entries at once, from the sorted
    /// part in one pass.
    pub fn remove_all(&mut self, hashes: &[i64]) {
        let mut sorted = Vec::new();
        for &h in hashes {
            if self.delta.remove(h).is_none() && self.wide.remove(&h).is_none() {
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
        let mut new: Vec<(u64, i64)> = self
            .delta
            .drain()
            .into_iter()
            .map(|(h, id)| (h as u64, id))
            .collect();
        new.sort_unstable_by_key(|&(h, _)| h);
        self.merge_in(new);
    }

    /// Merges entries sorted by hash into the sorted part.
    fn merge_in(&mut self, new: Vec<(u64, i64)>) {
        if new.is_empty() {
            return;
        }
        if self.dir.is_empty() {
            self.set_dir(&vec![0u32; 1 << BUCKET_BITS]);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // In hash order, every entry once.
        let mut seen = Vec::new();
        m.for_each_sorted(|h, id| {
            seen.push((h, id));
            Ok(())
        })
        .unwrap();
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(seen.len(), hs.len());
        assert!(seen.iter().all(|&(h, id)| m.get(h as i64) == Some(id)));
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
