//! `KeyIndex`: the record keys a writer holds in memory — hash → record ids, with what the open
//! transaction changed, so that a file (its savepoint) or the group can be undone.

use super::map::{IdMap, KeyMap};

/// Hash → record ids: the first id of each hash in the compact map, further ids (different
/// keys sharing a hash, or an entry that no longer names a live record) beside it.
#[derive(Default)]
pub struct KeyIndex {
    map: KeyMap,
    more: IdMap<Vec<i64>>,
    /// What the open transaction changed, in order.
    undo: Vec<Undo>,
    /// `undo.len()` when the current file started.
    file_mark: usize,
}

enum Undo {
    /// An id added under a hash (in `more` or the map).
    Added { h: i64, in_more: bool },
    /// An id that replaced another under a hash.
    Replaced { h: i64, old: i64, new: i64 },
}

impl KeyIndex {
    pub fn len(&self) -> usize {
        self.map.len() + self.more.values().map(Vec::len).sum::<usize>()
    }

    /// The map's id of each hash (one lookup per hash, the costly part), for `ids`.
    pub fn firsts(&self, hashes: &[i64]) -> Vec<Option<i64>> {
        self.map.get_many(hashes)
    }

    /// The ids under a hash given the map's (`first`, looked up once).
    pub fn ids(&self, h: i64, first: Option<i64>) -> impl Iterator<Item = i64> + '_ {
        let more = first.and_then(|_| self.more.get(&h));
        first.into_iter().chain(more.into_iter().flatten().copied())
    }

    pub fn get(&self, h: i64) -> Vec<i64> {
        self.ids(h, self.map.get(h)).collect()
    }

    fn put(&mut self, h: i64, id: i64) -> bool {
        if self.map.contains(h) {
            self.more.entry(h).or_default().push(id);
            true
        } else {
            self.map.insert(h, id);
            false
        }
    }

    /// A record stored by the open transaction.
    pub fn add(&mut self, h: i64, id: i64) {
        let in_more = self.put(h, id);
        self.undo.push(Undo::Added { h, in_more });
    }

    /// Touches where these hashes would be added, before adding them (see `KeyMap::get_many`).
    pub fn touch(&self, hashes: &[i64]) {
        self.map.touch(hashes);
    }

    /// A record stored by the open transaction, its hash known not to be here (a lookup saved).
    pub fn add_absent(&mut self, h: i64, id: i64) {
        debug_assert!(!self.map.contains(h));
        self.map.insert(h, id);
        self.undo.push(Undo::Added { h, in_more: false });
    }

    /// The open transaction replaced record `old` by `new` (same key): `new` takes `old`'s place
    /// under the hash, or is added if `old` is not held here.
    pub fn replace(&mut self, h: i64, old: i64, new: i64) {
        if self.swap(h, old, new) {
            self.undo.push(Undo::Replaced { h, old, new });
        } else {
            self.add(h, new);
        }
    }

    fn swap(&mut self, h: i64, from: i64, to: i64) -> bool {
        if self.map.get(h) == Some(from) {
            self.map.set(h, to);
            return true;
        }
        if let Some(slot) = self
            .more
            .get_mut(&h)
            .and_then(|v| v.iter_mut().find(|x| **x == from))
        {
            *slot = to;
            return true;
        }
        false
    }

    /// A committed record (stored by anyone); nothing if it is held already.
    pub fn add_committed(&mut self, h: i64, id: i64) {
        if !self.get(h).contains(&id) {
            self.put(h, id);
        }
    }

    /// Committed entries sorted by hash (as unsigned), e.g. a run read whole: those whose hash
    /// is new go into the compact map at once.
    pub fn load_sorted(&mut self, entries: &[(u64, i64)]) {
        let mut fresh = Vec::with_capacity(entries.len());
        let mut last: Option<u64> = None;
        for &(h, id) in entries {
            if last == Some(h) || self.map.contains(h as i64) {
                if !self.get(h as i64).contains(&id) && fresh.last() != Some(&(h, id)) {
                    if last == Some(h) && !self.map.contains(h as i64) {
                        // The first of this hash is still in `fresh`.
                        self.more.entry(h as i64).or_default().push(id);
                    } else {
                        self.put(h as i64, id);
                    }
                }
            } else {
                fresh.push((h, id));
            }
            last = Some(h);
        }
        self.map.extend_sorted(&fresh);
    }

    /// Every entry in hash order (as unsigned), the ids of one hash together.
    pub fn for_each_sorted(
        &self,
        mut f: impl FnMut(u64, i64) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.map.for_each_sorted(|h, id| {
            f(h, id)?;
            for &m in self.more.get(&(h as i64)).into_iter().flatten() {
                f(h, m)?;
            }
            Ok(())
        })
    }

    /// The current file is kept: the next one starts here.
    pub fn file_done(&mut self) {
        self.file_mark = self.undo.len();
    }

    /// The transaction committed: nothing before this point can be undone any more.
    pub fn committed(&mut self) {
        self.undo.clear();
        self.file_mark = 0;
    }

    /// Forgets what the current file changed (its savepoint was rolled back).
    pub fn undo_file(&mut self) {
        let mut gone = Vec::new();
        while self.undo.len() > self.file_mark {
            match self.undo.pop().expect("longer than the mark") {
                Undo::Added { h, in_more: true } => {
                    if let Some(v) = self.more.get_mut(&h) {
                        v.pop();
                        if v.is_empty() {
                            self.more.remove(&h);
                        }
                    }
                }
                Undo::Added { h, in_more: false } => gone.push(h),
                Undo::Replaced { h, old, new } => {
                    self.swap(h, new, old);
                }
            }
        }
        self.map.remove_all(&gone);
    }

    /// Forgets everything the transaction changed (it was rolled back).
    pub fn undo_group(&mut self) {
        self.file_mark = 0;
        self.undo_file();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_groups_undo_additions_and_replacements() {
        let mut idx = KeyIndex::default();
        idx.add_committed(7, 1);
        idx.add_committed(7, 2); // another key with the same hash
        idx.committed();
        idx.add(9, 3);
        idx.replace(7, 2, 4);
        idx.file_done();
        idx.replace(7, 1, 5);
        idx.add(7, 6);
        idx.replace(11, 99, 7); // not held: added
        assert_eq!(idx.get(7), [5, 4, 6]);
        assert_eq!(idx.get(11), [7]);
        idx.undo_file();
        assert_eq!(idx.get(7), [1, 4]);
        assert_eq!(idx.get(9), [3]);
        assert!(idx.get(11).is_empty());
        idx.undo_group();
        assert_eq!(idx.get(7), [1, 2]);
        assert!(idx.get(9).is_empty());
    }

    #[test]
    fn sorted_loads_keep_every_id_of_a_hash() {
        let mut idx = KeyIndex::default();
        idx.add_committed(5, 50);
        idx.load_sorted(&[(1, 10), (3, 30), (3, 31), (5, 50), (5, 51), (u64::MAX, 99)]);
        assert_eq!(idx.get(1), [10]);
        assert_eq!(idx.get(3), [30, 31]);
        assert_eq!(idx.get(5), [50, 51]);
        assert_eq!(idx.get(-1), [99]);
        assert_eq!(idx.len(), 6);
    }
}
