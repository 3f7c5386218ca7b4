//! Which of several identical files is the original: the one handed to the pipeline first.
//!
//! Workers hash files in parallel, so of two files with the same content the one that happens to
//! reach the writer first would be stored and the other called its duplicate — a verdict that
//! could differ between `run --dry-run` and `run`. Instead every file gets a turn when it is
//! submitted (files are submitted in discovery order), and once hashed a file waits until every
//! earlier file of its dataset and size has its hash too; if one of those has the same content,
//! it waits until that file is finished (committed, or judged in a dry run). Files of a unique
//! size — nearly all — never wait; nor do files whose earlier peers are already hashed.
//!
//! A turn ends when the last copy of it is dropped: the writer (or the judge) holds it with the
//! file's metadata until the file's outcome is committed.
//!
//! Files of a dataset with a record key are also stored in turn order (`Turn::is_next`): which
//! of two files holding the same key stores it, replaces it or is refused for it then does not
//! depend on which worker finished first, so a dry run and a run decide alike, and "latest"
//! means the order files were found in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Files that could be identical: same dataset, same size.
type Group = (String, u64);

/// The turns of files in flight.
#[derive(Default)]
pub struct Turns {
    next: AtomicU64,
    /// Per group, the files in flight by turn: their hash once known; per dataset, their turns.
    groups: Mutex<Groups>,
    changed: Condvar,
    /// Files waiting for another's turn: only then is a change worth a wake-up (a wake-up is a
    /// system call, and nearly every file waits for nothing).
    waiting: AtomicUsize,
}

#[derive(Default)]
struct Groups {
    by_size: HashMap<Group, BTreeMap<u64, Option<String>>>,
    by_dataset: HashMap<String, BTreeSet<u64>>,
}

/// One file's turn; cloned with the file's metadata, ended when the last clone drops.
#[derive(Clone)]
pub struct Turn(Arc<Held>);

struct Held {
    turns: Arc<Turns>,
    group: Group,
    seq: u64,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "turn {} of {:?}", self.0.seq, self.0.group)
    }
}

impl Turns {
    /// The next turn, for a file of `dataset` and `size`.
    pub fn enter(self: &Arc<Self>, dataset: &str, size: u64) -> Turn {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let group = (dataset.to_string(), size);
        let mut g = self.groups.lock().expect("turns lock");
        g.by_size
            .entry(group.clone())
            .or_default()
            .insert(seq, None);
        g.by_dataset
            .entry(dataset.to_string())
            .or_default()
            .insert(seq);
        Turn(Arc::new(Held {
            turns: self.clone(),
            group,
            seq,
        }))
    }
}

impl Turn {
    /// The file's content hash is known (`size` as hashed: a file that grew since it was
    /// submitted is of another group). Waits until the files before it that could be the same
    /// are hashed, and until one that is the same is finished; gives up waiting when `stop`.
    pub fn hashed(&self, sha: &str, size: u64, stop: &dyn Fn() -> bool) {
        let h = &self.0;
        let mut lock = h.turns.groups.lock().expect("turns lock");
        // A file that changed size since it was submitted is like none of its group (an empty
        // hash matches no content), and waits for nothing.
        let comparable = size == h.group.1;
        if let Some(slot) = lock
            .by_size
            .get_mut(&h.group)
            .and_then(|g| g.get_mut(&h.seq))
        {
            *slot = Some(if comparable {
                sha.to_string()
            } else {
                String::new()
            });
        }
        h.turns.changed.notify_all();
        if !comparable {
            return;
        }
        loop {
            let earlier = lock
                .by_size
                .get(&h.group)
                .map(|g| g.range(..h.seq).map(|(_, s)| s.clone()).collect::<Vec<_>>())
                .unwrap_or_default();
            let waiting = earlier
                .iter()
                .any(|s| s.as_deref().is_none_or(|s| s == sha));
            if !waiting || stop() {
                return;
            }
            h.turns.waiting.fetch_add(1, Ordering::SeqCst);
            lock = h
                .turns
                .changed
                .wait_timeout(lock, Duration::from_millis(200))
                .expect("turns lock")
                .0;
            h.turns.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Turn {
    /// The order it was handed out in.
    pub fn seq(&self) -> u64 {
        self.0.seq
    }

    /// Whether every file of its dataset handed over before it is finished, or in `taken`
    /// (being stored by the caller).
    pub fn is_next(&self, taken: &std::collections::HashSet<u64>) -> bool {
        let g = self.0.turns.groups.lock().expect("turns lock");
        g.by_dataset
            .get(&self.0.group.0)
            .is_none_or(|seqs| seqs.range(..self.0.seq).all(|s| taken.contains(s)))
    }
}

impl Turns {
    /// Wakes the files waiting for a turn, if any (called with the lock held, after a change).
    fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_all();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut groups = self.turns.groups.lock().expect("turns lock");
        if let Some(g) = groups.by_size.get_mut(&self.group) {
            g.remove(&self.seq);
            if g.is_empty() {
                groups.by_size.remove(&self.group);
            }
        }
        if let Some(d) = groups.by_dataset.get_mut(&self.group.0) {
            d.remove(&self.seq);
            if d.is_empty() {
                groups.by_dataset.remove(&self.group.0);
            }
        }
        self.turns.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn the_first_of_identical_files_goes_first_whoever_hashes_first() {
        let turns = Arc::new(Turns::default());
        let first = turns.enter("d", 10);
        let second = turns.enter("d", 10);
        let other_size = turns.enter("d", 11);
        let done = Arc::new(AtomicBool::new(false));
        let (d, s) = (done.clone(), second.clone());
        drop(second);
        // The second file is hashed first: it must wait for the first.
        let waiter = std::thread::spawn(move || {
            s.hashed("same", 10, &|| false);
            d.store(true, Ordering::SeqCst);
        });
        other_size.hashed("same", 11, &|| false);
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !done.load(Ordering::SeqCst),
            "waits for the first to be hashed"
        );
        first.hashed("same", 10, &|| false);
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !done.load(Ordering::SeqCst),
            "the same content: waits for it to finish"
        );
        drop(first);
        waiter.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        // Different content of the same size only waits for the hash.
        let a = turns.enter("d", 5);
        let b = turns.enter("d", 5);
        a.hashed("x", 5, &|| false);
        b.hashed("y", 5, &|| false);
        drop((a, b, other_size));
        let g = turns.groups.lock().unwrap();
        assert!(g.by_size.is_empty() && g.by_dataset.is_empty());
    }
}

/// Files of keyed datasets taken in turn order by a writer (or the dry-run judge): a file that
/// comes before its turn is held until every earlier file of its dataset is finished or taken.
#[derive(Default)]
pub struct InTurn {
    held: Vec<super::Job>,
    /// Turns of keyed files taken since the last commit (their turns end with it).
    taken: std::collections::HashSet<u64>,
}

impl InTurn {
    /// The job if it may go now (taken); else it is held.
    pub fn admit(&mut self, job: super::Job) -> Option<super::Job> {
        let keyed = job.meta.spec.as_ref().is_some_and(|s| !s.key.is_empty());
        match job.meta.turn.clone() {
            Some(t) if keyed => {
                if t.is_next(&self.taken) {
                    self.taken.insert(t.seq());
                    Some(job)
                } else {
                    self.held.push(job);
                    None
                }
            }
            _ => Some(job),
        }
    }

    /// A held job whose turn has come (taken), if any.
    pub fn next(&mut self) -> Option<super::Job> {
        let i = self
            .held
            .iter()
            .position(|j| j.meta.turn.as_ref().is_none_or(|t| t.is_next(&self.taken)))?;
        let job = self.held.remove(i);
        if let Some(t) = &job.meta.turn {
            self.taken.insert(t.seq());
        }
        Some(job)
    }

    /// The earliest held job whatever its turn (the feed has ended: nothing earlier can come).
    pub fn any(&mut self) -> Option<super::Job> {
        let i = (0..self.held.len())
            .min_by_key(|&i| self.held[i].meta.turn.as_ref().map_or(0, Turn::seq))?;
        Some(self.held.remove(i))
    }

    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// The files taken are committed (their turns end).
    pub fn committed(&mut self) {
        self.taken.clear();
    }
}
