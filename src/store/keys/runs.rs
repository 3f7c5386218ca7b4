//! Runs: the persistent part of a table's key index, stored in the store itself.
//!
//! A run is an immutable set of `(key hash, record id)` entries, sorted by hash (as unsigned),
//! cut into *slices* by the hash's top `bits` bits — on average at most 64 entries (about 600
//! bytes, packed: `Layout`) per slice — each slice one row of `ferry_key_slices`, keyed
//! `run << 32 | slice`. So a hash is
//! found with one lookup of one small row, with no directory to read first; a whole run is read
//! in key order by one range scan; and writing a run appends rows in key order.
//!
//! A run covers a range of *coordinates* `(lo, hi]`: record ids in SQLite (one writer at a
//! time numbers records in commit order), key epochs in PostgreSQL (one keyed group per table at
//! a time, across hosts). Together a table's runs cover everything up to its `covered` mark;
//! records after it are the *tail*, which every writer holds in memory.

use super::table::RunStore;
use anyhow::Result;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A slice's header: the bytes of each entry's hash and id, then the ids' base.
const HEADER: usize = 10;

/// A run as the store records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunMeta {
    pub id: i64,
    /// The coordinates it covers: `(lo, hi]`.
    pub lo: i64,
    pub hi: i64,
    pub entries: i64,
    pub bits: u8,
}

impl RunMeta {
    /// How many slices it is cut into.
    pub fn slices(&self) -> u32 {
        if self.bits == 0 {
            1
        } else {
            (1u64 << self.bits) as u32
        }
    }
}

/// The slice bits for a run of `entries`: the fewest that keep slices at 64 entries or less on
/// average.
pub fn bits_for(entries: u64) -> u8 {
    let slices = entries.div_ceil(64).max(1);
    (64 - (slices - 1).leading_zeros()).min(32) as u8
}

/// The slice of a hash in a run cut by `bits`.
pub fn slice_of(h: i64, bits: u8) -> u32 {
    if bits == 0 {
        0
    } else {
        ((h as u64) >> (64 - bits)) as u32
    }
}

/// The row key of a run's slice.
pub fn slice_key(run: i64, slice: u32) -> i64 {
    (run << 32) | slice as i64
}

/// How a slice packs its entries: every hash of a slice shares its top `bits` bits, so only
/// its low `hash_bytes` bytes are kept (whole bytes below the shared ones); ids are kept as
/// their distance from the slice's smallest id, in as few bytes as the largest needs. About 9
/// bytes an entry instead of 16.
struct Layout {
    hash_bytes: usize,
    id_bytes: usize,
    base: i64,
    /// The hash bits above the kept bytes, in place.
    high: u64,
}

impl Layout {
    fn of(blob: &[u8], bits: u8, slice: u32) -> Option<Layout> {
        let head = blob.get(..HEADER)?;
        let hash_bytes = head[0] as usize;
        let id_bytes = head[1] as usize;
        if !(1..=8).contains(&hash_bytes) || !(1..=8).contains(&id_bytes) {
            return None;
        }
        let kept = hash_bytes * 8;
        let high = if kept >= 64 {
            0
        } else {
            // The slice number is the hash's top `bits` bits; the ones above the kept bytes
            // are its top (64 - kept) bits.
            let top = (slice as u64) >> (bits as usize).saturating_sub(64 - kept);
            top << kept
        };
        Some(Layout {
            hash_bytes,
            id_bytes,
            base: i64::from_le_bytes(head[2..10].try_into().expect("8 bytes")),
            high,
        })
    }

    fn width(&self) -> usize {
        self.hash_bytes + self.id_bytes
    }

    fn low(&self, e: &[u8]) -> u64 {
        let mut b = [0u8; 8];
        b[..self.hash_bytes].copy_from_slice(&e[..self.hash_bytes]);
        u64::from_le_bytes(b)
    }

    fn entry(&self, e: &[u8]) -> (u64, i64) {
        let mut b = [0u8; 8];
        b[..self.id_bytes].copy_from_slice(&e[self.hash_bytes..self.width()]);
        (
            self.high | self.low(e),
            self.base.wrapping_add(u64::from_le_bytes(b) as i64),
        )
    }
}

/// Packs a slice's entries (sorted by hash).
fn encode(bits: u8, entries: &[(u64, i64)]) -> Vec<u8> {
    let hash_bytes = 8 - (bits as usize / 8);
    let base = entries.iter().map(|e| e.1).min().unwrap_or(0);
    let span = entries
        .iter()
        .map(|e| e.1.wrapping_sub(base) as u64)
        .max()
        .unwrap_or(0);
    let id_bytes = ((64 - span.leading_zeros() as usize).div_ceil(8)).max(1);
    let mut out = Vec::with_capacity(HEADER + entries.len() * (hash_bytes + id_bytes));
    out.push(hash_bytes as u8);
    out.push(id_bytes as u8);
    out.extend_from_slice(&base.to_le_bytes());
    for &(h, id) in entries {
        out.extend_from_slice(&h.to_le_bytes()[..hash_bytes]);
        out.extend_from_slice(&(id.wrapping_sub(base) as u64).to_le_bytes()[..id_bytes]);
    }
    out
}

/// The entries of slice `slice` of a run cut by `bits`.
pub fn decode(blob: &[u8], bits: u8, slice: u32) -> impl Iterator<Item = (u64, i64)> + '_ {
    let layout = Layout::of(blob, bits, slice);
    let width = layout.as_ref().map_or(1, Layout::width);
    blob.get(HEADER..)
        .unwrap_or_default()
        .chunks_exact(width)
        .filter_map(move |e| layout.as_ref().map(|l| l.entry(e)))
}

/// The ids slice `slice` of a run cut by `bits` holds under hash `h`.
pub fn find(blob: &[u8], bits: u8, slice: u32, h: i64) -> Vec<i64> {
    let Some(l) = Layout::of(blob, bits, slice) else {
        return Vec::new();
    };
    let body = &blob[HEADER..];
    let w = l.width();
    let n = body.len() / w;
    let want = h as u64;
    let at = |i: usize| l.high | l.low(&body[i * w..]);
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if at(mid) < want {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    (lo..n)
        .take_while(|&i| at(i) == want)
        .map(|i| l.entry(&body[i * w..(i + 1) * w]).1)
        .collect()
}

/// Cuts entries sorted by hash into a run's slices, handing each full slice on.
pub struct SliceWriter {
    bits: u8,
    current: Option<u32>,
    buf: Vec<(u64, i64)>,
    pub entries: u64,
}

impl SliceWriter {
    pub fn new(bits: u8) -> SliceWriter {
        SliceWriter {
            bits,
            current: None,
            buf: Vec::with_capacity(128),
            entries: 0,
        }
    }

    /// Adds the next entry (not below the last); a slice it completes goes to `out`.
    pub fn push(&mut self, h: u64, id: i64, out: &mut impl FnMut(u32, Vec<u8>)) {
        let s = slice_of(h as i64, self.bits);
        if self.current != Some(s) {
            self.flush(out);
            self.current = Some(s);
        }
        self.buf.push((h, id));
        self.entries += 1;
    }

    /// Hands on the last slice.
    pub fn flush(&mut self, out: &mut impl FnMut(u32, Vec<u8>)) {
        if let Some(s) = self.current.take() {
            out(s, encode(self.bits, &self.buf));
            self.buf.clear();
        }
    }
}

/// A run being written: entries in hash order cut into slices, handed to the store a thousand
/// slices at a time.
pub struct RunWriter {
    pub run: i64,
    pub bits: u8,
    writer: SliceWriter,
    slices: Vec<(u32, Vec<u8>)>,
}

impl RunWriter {
    /// A new run (its id from the store) for about `entries` entries.
    pub fn new<S: RunStore + ?Sized>(rs: &mut S, entries: u64) -> Result<RunWriter> {
        let bits = bits_for(entries);
        Ok(RunWriter {
            run: rs.new_run()?,
            bits,
            writer: SliceWriter::new(bits),
            slices: Vec::new(),
        })
    }

    pub fn push<S: RunStore + ?Sized>(&mut self, rs: &mut S, h: u64, id: i64) -> Result<()> {
        let slices = &mut self.slices;
        self.writer.push(h, id, &mut |s, b| slices.push((s, b)));
        if self.slices.len() >= 1024 {
            rs.put_slices(self.run, &self.slices)?;
            self.slices.clear();
        }
        Ok(())
    }

    /// Writes the last slices; the run as written, covering `(lo, hi]`.
    pub fn finish<S: RunStore + ?Sized>(mut self, rs: &mut S, lo: i64, hi: i64) -> Result<RunMeta> {
        let slices = &mut self.slices;
        self.writer.flush(&mut |s, b| slices.push((s, b)));
        rs.put_slices(self.run, &self.slices)?;
        Ok(RunMeta {
            id: self.run,
            lo,
            hi,
            entries: self.writer.entries as i64,
            bits: self.bits,
        })
    }
}

/// Runs read together in hash order (a k-way merge by a heap), slices pulled in batches.
pub struct Streams {
    runs: Vec<RunMeta>,
    next: Vec<u32>,
    bufs: Vec<std::vec::IntoIter<(u64, i64)>>,
    heap: BinaryHeap<Reverse<(u64, i64, usize)>>,
}

/// Slices read per statement when a run is read whole into memory.
pub const SCAN_SLICES: u32 = 4096;
/// Slices read per statement from each of the runs a merge reads together (64 KiB each: a
/// merge of a hundred runs holds a few MiB).
const MERGE_SLICES: u32 = 64;

impl Streams {
    pub fn new<S: RunStore + ?Sized>(rs: &mut S, runs: &[RunMeta]) -> Result<Streams> {
        let mut s = Streams {
            runs: runs.to_vec(),
            next: vec![0; runs.len()],
            bufs: Vec::new(),
            heap: BinaryHeap::new(),
        };
        for i in 0..runs.len() {
            let mut it = s.pull(rs, i)?.into_iter();
            if let Some((h, id)) = it.next() {
                s.heap.push(Reverse((h, id, i)));
            }
            s.bufs.push(it);
        }
        Ok(s)
    }

    /// The next batch of run `i` (empty at its end).
    fn pull<S: RunStore + ?Sized>(&mut self, rs: &mut S, i: usize) -> Result<Vec<(u64, i64)>> {
        let run = self.runs[i];
        let mut batch = Vec::new();
        while batch.is_empty() && self.next[i] < run.slices() {
            let to = self.next[i].saturating_add(MERGE_SLICES).min(run.slices());
            rs.scan_slices(run.id, self.next[i], to, &mut |s, b| {
                batch.extend(decode(b, run.bits, s))
            })?;
            self.next[i] = to;
        }
        Ok(batch)
    }

    /// The next entry of all the runs, in hash order.
    pub fn next<S: RunStore + ?Sized>(&mut self, rs: &mut S) -> Result<Option<(u64, i64)>> {
        let Some(Reverse((h, id, i))) = self.heap.pop() else {
            return Ok(None);
        };
        let e = match self.bufs[i].next() {
            Some(e) => Some(e),
            None => {
                self.bufs[i] = self.pull(rs, i)?.into_iter();
                self.bufs[i].next()
            }
        };
        if let Some((h2, id2)) = e {
            self.heap.push(Reverse((h2, id2, i)));
        }
        Ok(Some((h, id)))
    }
}

/// Which of a table's runs (sizes oldest first) to merge: the newest runs from the oldest one
/// that is less than twice the size of all newer runs together, so that every run ends at least
/// twice the size of everything newer — at most about log2(entries) runs, each entry rewritten
/// about once per doubling. `limit`: the most entries one merge may take (merges that would
/// take more wait for a moment with time for them).
pub fn merge_plan(sizes: &[u64], limit: u64) -> Option<std::ops::Range<usize>> {
    let k = sizes.len();
    let mut newer = 0u64;
    let mut from = None;
    for i in (0..k).rev() {
        if i + 1 < k && sizes[i] < 2 * newer {
            from = Some(i);
        }
        newer += sizes[i];
    }
    let from = from?;
    let total: u64 = sizes[from..].iter().sum();
    (total <= limit).then_some(from..k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_hold_sorted_entries_found_by_hash() {
        let entries: Vec<(u64, i64)> = vec![
            (1, 10),
            (5, 50),
            (5, 51),
            (1 << 40, 1 << 41),
            (1 << 63, 7),
            ((1 << 63) | 12345, -3),
            (u64::MAX, 9),
        ];
        for bits in [0u8, 1, 3, 8, 9, 17, 32] {
            let mut slices = Vec::new();
            let mut w = SliceWriter::new(bits);
            for &(h, id) in &entries {
                w.push(h, id, &mut |s, b| slices.push((s, b)));
            }
            w.flush(&mut |s, b| slices.push((s, b)));
            assert_eq!(w.entries, entries.len() as u64);
            let back: Vec<(u64, i64)> = slices
                .iter()
                .flat_map(|(s, b)| decode(b, bits, *s))
                .collect();
            assert_eq!(back, entries, "bits {bits}");
            for &(h, _) in &entries {
                let (s, blob) = slices
                    .iter()
                    .find(|(s, _)| *s == slice_of(h as i64, bits))
                    .unwrap();
                let want: Vec<i64> = entries.iter().filter(|e| e.0 == h).map(|e| e.1).collect();
                assert_eq!(find(blob, bits, *s, h as i64), want, "bits {bits}");
            }
            let (s, blob) = &slices[0];
            assert!(find(blob, bits, *s, 2).is_empty());
        }
        // Packed: under 16 bytes an entry.
        let many: Vec<(u64, i64)> = (0..64u64)
            .map(|i| ((i << 40) | 7, 1_000 + i as i64))
            .collect();
        assert!(encode(17, &many).len() < 64 * 10);
        assert_eq!(bits_for(0), 0);
        assert_eq!(bits_for(64), 0);
        assert_eq!(bits_for(65), 1);
        assert_eq!(bits_for(6_800_000), 17);
    }

    #[test]
    fn merges_keep_runs_doubling_and_few() {
        assert_eq!(merge_plan(&[], u64::MAX), None);
        assert_eq!(merge_plan(&[100], u64::MAX), None);
        assert_eq!(merge_plan(&[100, 50], u64::MAX), None);
        assert_eq!(merge_plan(&[100, 30, 20], u64::MAX), Some(1..3));
        assert_eq!(merge_plan(&[100, 60], u64::MAX), Some(0..2));
        assert_eq!(merge_plan(&[100, 60], 100), None);
        // A thousand flushes of one size: few runs, each entry rewritten a few times.
        let (mut runs, mut written) = (Vec::<u64>::new(), 0u64);
        for flush in std::iter::repeat_n(1000u64, 1000) {
            runs.push(flush);
            written += flush;
            while let Some(r) = merge_plan(&runs, u64::MAX) {
                let total: u64 = runs[r.clone()].iter().sum();
                written += total;
                runs.truncate(r.start);
                runs.push(total);
            }
        }
        assert!(runs.len() <= 10, "{runs:?}");
        assert!(written <= 12 * 1_000_000, "{written}");
    }
}
