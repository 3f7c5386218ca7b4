use super::*;
use std::collections::BTreeMap;

/// Runs kept in maps, as a store would keep them in tables.
#[derive(Default)]
struct Mem {
    covered: i64,
    runs: Vec<RunMeta>,
    slices: BTreeMap<(i64, u32), Vec<u8>>,
    next: i64,
    live: HashSet<i64>,
    fetched: usize,
}

impl RunStore for Mem {
    fn runs(&mut self, _: &str) -> Result<RunSet> {
        let mut r = self.runs.clone();
        r.sort_by_key(|m| m.lo);
        Ok(RunSet {
            covered: self.covered,
            generation: 0,
            runs: r,
        })
    }
    fn get_slices(
        &mut self,
        run: i64,
        wanted: &[u32],
        each: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<()> {
        for &s in wanted {
            if let Some(b) = self.slices.get(&(run, s)) {
                self.fetched += 1;
                each(s, b);
            }
        }
        Ok(())
    }
    fn scan_slices(
        &mut self,
        run: i64,
        from: u32,
        to: u32,
        each: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<()> {
        for ((_, s), b) in self.slices.range((run, from)..(run, to)) {
            each(*s, b);
        }
        Ok(())
    }
    fn new_run(&mut self) -> Result<i64> {
        self.next += 1;
        Ok(self.next)
    }
    fn put_slices(&mut self, run: i64, slices: &[(u32, Vec<u8>)]) -> Result<()> {
        for (s, b) in slices {
            assert!(
                self.slices.insert((run, *s), b.clone()).is_none(),
                "a slice written twice"
            );
        }
        Ok(())
    }
    fn add_run(&mut self, _: &str, meta: &RunMeta) -> Result<()> {
        self.runs.push(*meta);
        Ok(())
    }
    fn drop_runs(&mut self, _: &str, runs: &[i64]) -> Result<()> {
        self.runs.retain(|r| !runs.contains(&r.id));
        self.slices.retain(|(r, _), _| !runs.contains(r));
        Ok(())
    }
    fn set_covered(&mut self, _: &str, covered: i64) -> Result<()> {
        self.covered = covered;
        Ok(())
    }
    fn live(&mut self, _: &str, ids: &[i64]) -> Result<HashSet<i64>> {
        Ok(ids
            .iter()
            .copied()
            .filter(|i| self.live.contains(i))
            .collect())
    }
}

fn h(i: i64) -> i64 {
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as i64
}

/// Stores records 1..=n one by one at coordinate = id, committing every 1000.
fn load(tk: &mut TableKeys, rs: &mut Mem, from: i64, n: i64) {
    tk.refresh(rs, "t").unwrap();
    for id in from..from + n {
        tk.stored(&[(id, h(id), id, false)], &[]);
        rs.live.insert(id);
        if id % 1000 == 0 {
            tk.maintain(rs, "t", false, None, &|| false).unwrap();
            tk.committed();
        }
    }
    tk.maintain(rs, "t", true, Some(u64::MAX), &|| false)
        .unwrap();
    tk.committed();
}

#[test]
fn a_new_writer_finds_every_key_in_the_runs_without_reading_them() {
    let mut rs = Mem::default();
    let mut first = TableKeys::new(1 << 30);
    load(&mut first, &mut rs, 1, 300_000);
    assert_eq!(rs.covered, 300_000);
    assert!(rs.runs.len() <= 3, "{:?}", rs.runs);
    let total: i64 = rs.runs.iter().map(|r| r.entries).sum();
    assert_eq!(total, 300_000);
    // A fresh writer: nothing in memory; a handful of hashes are probed, not read whole.
    let mut fresh = TableKeys::new(1 << 30);
    assert_eq!(fresh.refresh(&mut rs, "t").unwrap(), 300_000);
    let hashes: Vec<i64> = [5, 77_777, 299_999, 400_000]
        .iter()
        .map(|&i| h(i))
        .collect();
    let found = fresh.find(&mut rs, &hashes, &[true; 4]).unwrap();
    assert_eq!(found.candidates[0], [5]);
    assert_eq!(found.candidates[1], [77_777]);
    assert_eq!(found.candidates[2], [299_999]);
    assert!(found.candidates[3].is_empty());
    assert_eq!(fresh.mem.len(), 0, "nothing was read whole");
    assert!(rs.fetched <= 4 * rs.runs.len());
    // Many probes: the runs are read into memory once that is cheaper.
    let many: Vec<i64> = (1..=20_000).map(h).collect();
    let found = fresh.find(&mut rs, &many, &vec![true; many.len()]).unwrap();
    assert!(found
        .candidates
        .iter()
        .enumerate()
        .all(|(i, c)| c == &[i as i64 + 1]));
    assert_eq!(fresh.mem.len(), 300_000);
}

#[test]
fn replaced_records_leave_the_runs_when_merged() {
    let mut rs = Mem::default();
    let mut tk = TableKeys::new(1 << 30);
    load(&mut tk, &mut rs, 1, 2_000);
    // Record 10 is replaced by 2001, record 20 by 2002.
    tk.refresh(&mut rs, "t").unwrap();
    tk.stored(&[], &[(2_001, h(10), 10, 2_001)]);
    tk.stored(&[], &[(2_002, h(20), 20, 2_002)]);
    rs.live.remove(&10);
    rs.live.remove(&20);
    rs.live.extend([2_001, 2_002]);
    assert_eq!(tk.mem.get(h(10)), [2_001]);
    // As many new records, so that the next run is merged with the first.
    for id in 2_003..=4_000 {
        tk.stored(&[(id, h(id), id, false)], &[]);
        rs.live.insert(id);
    }
    tk.maintain(&mut rs, "t", true, Some(u64::MAX), &|| false)
        .unwrap();
    tk.committed();
    // Everything in one run now: stale entries dropped, the new ids kept.
    let runs = rs.runs("t").unwrap().runs;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].entries, 4_000 - 2);
    let mut fresh = TableKeys::new(1 << 30);
    fresh.refresh(&mut rs, "t").unwrap();
    let found = fresh
        .find(&mut rs, &[h(10), h(20), h(30)], &[true; 3])
        .unwrap();
    assert_eq!(found.candidates, [vec![2_001], vec![2_002], vec![30]]);
}

#[test]
fn undone_files_leave_nothing_in_the_tail() {
    let mut rs = Mem::default();
    let mut tk = TableKeys::new(1 << 30);
    tk.refresh(&mut rs, "t").unwrap();
    tk.stored(&[(1, h(1), 1, false)], &[]);
    tk.file_done();
    tk.stored(&[(2, h(2), 2, false)], &[]);
    tk.undo_file();
    assert_eq!(tk.tail_len(), 1);
    assert!(tk.mem.get(h(2)).is_empty());
    tk.maintain(&mut rs, "t", true, Some(u64::MAX), &|| false)
        .unwrap();
    assert_eq!(rs.runs[0].entries, 1);
}

#[test]
fn memory_over_its_cap_keeps_the_tail_only() {
    let mut rs = Mem::default();
    let mut tk = TableKeys::new(5_000);
    load(&mut tk, &mut rs, 1, 20_000);
    assert!(tk.mem.len() <= 5_000, "{}", tk.mem.len());
    // Still exact: what memory dropped is probed in the runs.
    let found = tk.find(&mut rs, &[h(3), h(19_999)], &[true; 2]).unwrap();
    assert_eq!(found.candidates, [vec![3], vec![19_999]]);
}
