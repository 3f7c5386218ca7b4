//! `Delta`: the recent entries of a `KeyMap` — an open-addressing table of hash → id, probed
//! linearly from the hash's low bits. A hash map of its own (rather than the standard one) so
//! that a chunk's lookups can touch their slots first and overlap the waits for memory.

/// Marks an empty slot; the one hash equal to it is kept aside (`min`).
const EMPTY: i64 = i64::MIN;

#[derive(Default)]
pub struct Delta {
    slots: Vec<(i64, i64)>,
    len: usize,
    /// The id of hash `EMPTY`, if it is here.
    min: Option<i64>,
}

impl Delta {
    pub fn len(&self) -> usize {
        self.len + usize::from(self.min.is_some())
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, h: i64) -> usize {
        (h as u64 as usize) & self.mask()
    }

    /// Touches the slots of these hashes (independent reads, overlapped by the processor), so
    /// the lookups that follow find them in cache.
    pub fn touch(&self, hashes: &[i64]) {
        if self.slots.is_empty() {
            return;
        }
        let mut t = 0i64;
        for &h in hashes {
            t ^= self.slots[self.home(h)].0;
        }
        std::hint::black_box(t);
    }

    pub fn get(&self, h: i64) -> Option<i64> {
        if h == EMPTY {
            return self.min;
        }
        if self.slots.is_empty() {
            return None;
        }
        let mut i = self.home(h);
        loop {
            let (k, v) = self.slots[i];
            if k == h {
                return Some(v);
            }
            if k == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask();
        }
    }

    /// Sets a hash's id; the previous one, if it was here.
    pub fn insert(&mut self, h: i64, id: i64) -> Option<i64> {
        if h == EMPTY {
            return self.min.replace(id);
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mut i = self.home(h);
        loop {
            let (k, v) = self.slots[i];
            if k == h {
                self.slots[i].1 = id;
                return Some(v);
            }
            if k == EMPTY {
                self.slots[i] = (h, id);
                self.len += 1;
                return None;
            }
            i = (i + 1) & self.mask();
        }
    }

    pub fn get_mut(&mut self, h: i64) -> Option<&mut i64> {
        if h == EMPTY {
            return self.min.as_mut();
        }
        if self.slots.is_empty() {
            return None;
        }
        let mut i = self.home(h);
        loop {
            let k = self.slots[i].0;
            if k == h {
                return Some(&mut self.slots[i].1);
            }
            if k == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask();
        }
    }

    /// Removes a hash; its id, if it was here. The slots after it move back so that every
    /// entry stays reachable from its home slot.
    pub fn remove(&mut self, h: i64) -> Option<i64> {
        if h == EMPTY {
            return self.min.take();
        }
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(h);
        loop {
            let (k, v) = self.slots[i];
            if k == EMPTY {
                return None;
            }
            if k == h {
                let mut hole = i;
                let mut j = (i + 1) & mask;
                while self.slots[j].0 != EMPTY {
                    let home = self.home(self.slots[j].0);
                    // Move j into the hole if its home is not between the hole and j.
                    let between = if hole <= j {
                        hole < home && home <= j
                    } else {
                        hole < home || home <= j
                    };
                    if !between {
                        self.slots[hole] = self.slots[j];
                        hole = j;
                    }
                    j = (j + 1) & mask;
                }
                self.slots[hole] = (EMPTY, 0);
                self.len -= 1;
                return Some(v);
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        self.slots = vec![(EMPTY, 0); (old.len() * 2).max(1024)];
        self.len = 0;
        for (k, v) in old {
            if k != EMPTY {
                self.insert(k, v);
            }
        }
    }

    /// Every entry, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.slots
            .iter()
            .copied()
            .filter(|e| e.0 != EMPTY)
            .chain(self.min.map(|v| (EMPTY, v)))
    }

    /// Takes every entry out (the table keeps its size for the next ones).
    pub fn drain(&mut self) -> Vec<(i64, i64)> {
        let out: Vec<(i64, i64)> = self.iter().collect();
        self.slots.iter_mut().for_each(|s| *s = (EMPTY, 0));
        self.len = 0;
        self.min = None;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_collisions_removals_and_growth() {
        let mut d = Delta::default();
        let mut model = std::collections::HashMap::new();
        let mut x = 7u64;
        for i in 0..20_000i64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Few distinct low bits: long probe runs.
            let h = ((x >> 20) as i64 & 0xFFF) | ((x as i64) << 32);
            match x % 5 {
                0 => {
                    assert_eq!(d.remove(h), model.remove(&h));
                }
                _ => {
                    assert_eq!(d.insert(h, i), model.insert(h, i));
                }
            }
        }
        d.insert(EMPTY, 3);
        model.insert(EMPTY, 3);
        assert_eq!(d.len(), model.len());
        for (&h, &v) in &model {
            assert_eq!(d.get(h), Some(v));
        }
        let mut all: Vec<_> = d.drain();
        all.sort();
        let mut want: Vec<_> = model.into_iter().collect();
        want.sort();
        assert_eq!(all, want);
        assert_eq!(d.len(), 0);
        assert_eq!(d.get(EMPTY), None);
    }
}
