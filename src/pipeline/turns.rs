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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Files that could be identical: same dataset, same size.
type Group = (String, u64);

/// The turns of files in flight.
#[derive(Default)]
pub struct Turns {
    next: AtomicU64,
    /// Per group, the files in flight by turn: their hash once known.
    groups: Mutex<HashMap<Group, BTreeMap<u64, Option<String>>>>,
    changed: Condvar,
    /// Files waiting for another's turn: only then is a change worth a wake-up (a wake-up is a
    /// system call, and nearly every file waits for nothing).
    waiting: AtomicUsize,
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
        self.groups
            .lock()
            .expect("turns lock")
            .entry(group.clone())
            .or_default()
            .insert(seq, None);
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
        let mut groups = h.turns.groups.lock().expect("turns lock");
        // A file that changed size since it was submitted is like none of its group (an empty
        // hash matches no content), and waits for nothing.
        let comparable = size == h.group.1;
        if let Some(slot) = groups.get_mut(&h.group).and_then(|g| g.get_mut(&h.seq)) {
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
            let earlier = groups
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
            groups = h
                .turns
                .changed
                .wait_timeout(groups, Duration::from_millis(200))
                .expect("turns lock")
                .0;
            h.turns.waiting.fetch_sub(1, Ordering::SeqCst);
        }
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
        if let Some(g) = groups.get_mut(&self.group) {
            g.remove(&self.seq);
            if g.is_empty() {
                groups.remove(&self.group);
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
        assert!(turns.groups.lock().unwrap().is_empty());
    }
}
