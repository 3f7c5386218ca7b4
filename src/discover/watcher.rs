//! OS file events as hints (notify; inotify on Linux): a watcher on the incoming folder,
//! re-created when the folder is replaced. Events only say "look": the caller scans, and a
//! periodic full rescan is the truth that catches what events missed (network filesystems send
//! none at all). Files moved in are complete the moment their event arrives (`hint_complete`);
//! a close after writing is only a hint, since writers reopen and append.

use super::{Readiness, Stamp};
use anyhow::{Context, Result};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// OS file events, when used: a watcher on the incoming folder, re-created when the folder is
/// replaced.
pub struct Events {
    enabled: bool,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    watching: Option<Watching>,
    /// Set when an event said the watched folder itself went away (until it is looked for).
    pub root_gone: bool,
}

/// A live watch on one folder.
struct Watching {
    _watcher: notify::RecommendedWatcher,
    dir: PathBuf,
    /// Device and inode: a folder replaced under the same name is a new folder to watch.
    id: (u64, u64),
}

impl Events {
    pub fn new(enabled: bool) -> Events {
        let (tx, rx) = unbounded();
        Events {
            enabled,
            tx,
            rx,
            watching: None,
            root_gone: false,
        }
    }

    /// Makes sure the folder is watched if it exists; returns whether it exists.
    pub fn ensure(&mut self, dir: &Path) -> Result<bool> {
        self.root_gone = false;
        let meta = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => m,
            _ => {
                self.watching = None;
                return Ok(false);
            }
        };
        let id = (meta.dev(), meta.ino());
        if !self.enabled || self.watching.as_ref().is_some_and(|w| w.id == id) {
            return Ok(true);
        }
        self.watching = None;
        let tx = self.tx.clone();
        let mut w = notify::recommended_watcher(move |ev: notify::Result<Event>| {
            if let Ok(ev) = ev {
                let _ = tx.send(ev);
            }
        })
        .context("starting the file watcher")?;
        w.watch(dir, RecursiveMode::Recursive)
            .with_context(|| format!("watching {}", dir.display()))?;
        self.watching = Some(Watching {
            _watcher: w,
            dir: dir.to_path_buf(),
            id,
        });
        Ok(true)
    }

    /// Waits up to `wait` for OS events and drains a burst of them; true if any came. Files
    /// moved in are marked complete. A close after writing is only a hint to look: a writer may
    /// reopen and append again.
    pub fn wait(&mut self, wait: Duration, readiness: &mut Readiness) -> bool {
        if !self.enabled {
            std::thread::sleep(wait);
            return false;
        }
        let first = match self.rx.recv_timeout(wait) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => return false,
            // Cannot happen (we hold a sender), but never spin.
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(wait);
                return false;
            }
        };
        let mut hinted = false;
        for ev in std::iter::once(first).chain(self.rx.try_iter()) {
            use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
            // Opening and reading — our own scans and reads among them — change nothing; counting
            // them as hints would make every scan trigger the next.
            if matches!(
                ev.kind,
                EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write)
            ) {
                continue;
            }
            hinted = true;
            let complete = matches!(
                ev.kind,
                EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
            );
            if complete {
                for p in &ev.paths {
                    if let Ok(m) = p.symlink_metadata() {
                        if m.is_file() {
                            readiness.hint_complete(p, Stamp::of(&m));
                        }
                    }
                }
            }
            let gone = matches!(
                ev.kind,
                EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From))
            );
            let root = self.watching.as_ref().map(|w| w.dir.as_path());
            if gone && ev.paths.iter().any(|p| Some(p.as_path()) == root) {
                self.watching = None;
                self.root_gone = true;
            }
        }
        hinted
    }
}
