//! Finding files and judging whether they are ready (R-ready).
//!
//! `scan` walks a folder (recursively, never following symlinks) into `Entry`s; `Readiness`
//! remembers what it has seen and says, per entry, whether it may be taken now or what holds it:
//! an ignored name, a missing done marker, or a quiet period not yet over. Both `ferry run` and
//! `ferry watch` use these; the watcher's events only add hints (`hint_complete`).
//!
//! `watcher` turns OS file events into hints to scan.
//!
//! This module reads metadata only, never file contents.

mod watcher;

pub use watcher::Events;

use crate::spool::RelPath;
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Temp names ignored unless the config says otherwise.
pub const DEFAULT_IGNORE: &[&str] = &[
    "*.tmp",
    "*.part",
    "*.partial",
    "*.filepart",
    "*.crdownload",
    "*.swp",
    "*~",
];

/// How files are judged ready.
#[derive(Debug, Clone)]
pub struct Rules {
    ignore: GlobSet,
    patterns: Vec<String>,
    /// When set, a file is ready only once `<name><marker>` exists beside it.
    pub done_marker: Option<String>,
    /// Quiet period: size and mtime unchanged this long.
    pub settle: Duration,
}

impl Rules {
    pub fn new(
        patterns: &[String],
        done_marker: Option<String>,
        settle: Duration,
    ) -> Result<Rules, globset::Error> {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            b.add(Glob::new(p)?);
        }
        Ok(Rules {
            ignore: b.build()?,
            patterns: patterns.to_vec(),
            done_marker,
            settle,
        })
    }

    /// The rule that makes ferry ignore a file name, if any.
    pub fn ignored(&self, name: &str) -> Option<Hold> {
        if name.starts_with('.') {
            return Some(Hold::Hidden);
        }
        if let Some(m) = &self.done_marker {
            if name.ends_with(m.as_str()) && name.len() > m.len() {
                return Some(Hold::IsMarker);
            }
        }
        let hits = self.ignore.matches(name);
        hits.first().map(|&i| Hold::TempName {
            pattern: self.patterns[i].clone(),
        })
    }
}

impl Default for Rules {
    fn default() -> Self {
        let patterns: Vec<String> = DEFAULT_IGNORE.iter().map(|s| s.to_string()).collect();
        Rules::new(&patterns, None, Duration::from_secs(1)).expect("default patterns are valid")
    }
}

/// What a file looks like from the outside; any change means it is still being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// How long ago the file was last modified, by the filesystem's clock.
    pub fn age(&self, now: SystemTime) -> Duration {
        let now_ns = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let d = now_ns - self.mtime_ns;
        if d <= 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(d.min(u64::MAX as i128) as u64)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Symlink,
    /// FIFO, socket or device.
    Special,
}

/// Something found in a scanned folder.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub rel: RelPath,
    pub kind: EntryKind,
    pub stamp: Stamp,
}

/// Why a file is not taken (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    Hidden,
    TempName {
        pattern: String,
    },
    IsMarker,
    NoMarker {
        marker: String,
    },
    Settling {
        quiet: Duration,
        settle: Duration,
    },
    /// No configured dataset takes it, and the config says `strict_datasets = true`.
    NoDataset,
}

impl Hold {
    /// A stable identifier for reports.
    pub fn id(&self) -> &'static str {
        match self {
            Hold::Hidden => "hidden",
            Hold::TempName { .. } => "temp_name",
            Hold::IsMarker => "done_marker",
            Hold::NoMarker { .. } => "no_done_marker",
            Hold::Settling { .. } => "settling",
            Hold::NoDataset => "no_dataset",
        }
    }
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::Hidden => write!(f, "hidden name (starts with '.')"),
            Hold::TempName { pattern } => write!(f, "temp name (matches {pattern})"),
            Hold::IsMarker => write!(f, "a done marker (taken with its file)"),
            Hold::NoMarker { marker } => write!(f, "waiting for its done marker {marker}"),
            Hold::Settling { quiet, settle } => write!(
                f,
                "still changing: quiet for {} ms, needs {} ms",
                quiet.as_millis(),
                settle.as_millis()
            ),
            Hold::NoDataset => write!(
                f,
                "no configured dataset takes it (strict_datasets = true); add a dataset whose \
                 match takes it"
            ),
        }
    }
}

/// What one walk of a folder found.
#[derive(Debug, Default)]
pub struct Scan {
    pub entries: Vec<Entry>,
    /// Entries skipped by name, with the rule (temp names, hidden files, markers).
    pub ignored: Vec<(RelPath, Hold)>,
    /// Paths that could not be examined.
    pub errors: Vec<(PathBuf, std::io::Error)>,
}

/// Walks `dir` recursively without following symlinks. Hidden folders are skipped whole; the
/// spool's own folders (`exclude`) are never entered.
pub fn scan(dir: &Path, rules: &Rules, exclude: &[PathBuf]) -> Scan {
    scan_under(dir, dir, rules, exclude)
}

/// Like `scan`, walking only the folder `under` inside `dir`: its files get their paths
/// relative to `dir`, as a scan of `dir` would give them.
pub fn scan_under(dir: &Path, under: &Path, rules: &Rules, exclude: &[PathBuf]) -> Scan {
    let mut out = Scan::default();
    let walker = walkdir::WalkDir::new(under)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            if e.depth() == 0 {
                return true;
            }
            if e.file_type().is_dir() {
                let hidden = e.file_name().to_string_lossy().starts_with('.');
                return !hidden && !exclude.iter().any(|x| x == e.path());
            }
            true
        });
    for item in walker {
        let e = match item {
            Ok(e) => e,
            Err(err) => {
                let path = err.path().map(Path::to_path_buf).unwrap_or_default();
                let io = err
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("walk error"));
                if io.kind() != std::io::ErrorKind::NotFound {
                    out.errors.push((path, io));
                }
                continue;
            }
        };
        if !e.file_type().is_dir() {
            add(&mut out, dir, e.path(), rules);
        }
    }
    out
}

/// The named files, each judged as `scan` would judge it in `dir` (they are inside it).
pub fn pick(dir: &Path, files: &[PathBuf], rules: &Rules) -> Scan {
    let mut out = Scan::default();
    for f in files {
        add(&mut out, dir, f, rules);
    }
    out
}

/// One path found (or named) under `dir`: an entry, ignored by name, or an error.
fn add(out: &mut Scan, dir: &Path, path: &Path, rules: &Rules) {
    let Some(rel) = path.strip_prefix(dir).ok().and_then(RelPath::from_relative) else {
        return;
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if let Some(hold) = rules.ignored(&name) {
        out.ignored.push((rel, hold));
        return;
    }
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(err) => {
            if err.kind() != std::io::ErrorKind::NotFound {
                out.errors.push((path.to_path_buf(), err));
            }
            return;
        }
    };
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Special
    };
    out.entries.push(Entry {
        path: path.to_path_buf(),
        rel,
        kind,
        stamp: Stamp::of(&meta),
    });
}

/// The done marker that belongs to a file, if the rules use markers.
pub fn marker_for(rules: &Rules, path: &Path) -> Option<PathBuf> {
    let m = rules.done_marker.as_ref()?;
    let mut name = path.file_name()?.to_os_string();
    name.push(m);
    Some(path.with_file_name(name))
}

struct Seen {
    stamp: Stamp,
    since: Instant,
    /// An OS event said the file is complete (moved in), as of this stamp.
    complete: Option<Stamp>,
}

/// Remembers what was seen, to judge the quiet period across looks.
#[derive(Default)]
pub struct Readiness {
    seen: HashMap<PathBuf, Seen>,
}

impl Readiness {
    /// Whether `e` may be taken now. A file is ready when its done marker exists (marker mode),
    /// or when it has not changed for the quiet period: by its own mtime, or across our looks.
    pub fn check(
        &mut self,
        rules: &Rules,
        e: &Entry,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), Hold> {
        if e.kind != EntryKind::File {
            return Ok(());
        }
        if let Some(marker) = marker_for(rules, &e.path) {
            return if marker.symlink_metadata().is_ok() {
                Ok(())
            } else {
                Err(Hold::NoMarker {
                    marker: marker
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                })
            };
        }
        let seen = self.seen.entry(e.path.clone()).or_insert(Seen {
            stamp: e.stamp,
            since: now,
            complete: None,
        });
        if seen.stamp != e.stamp {
            seen.stamp = e.stamp;
            seen.since = now;
        }
        if seen.complete == Some(e.stamp) {
            return Ok(());
        }
        let quiet = e
            .stamp
            .age(wall)
            .max(now.saturating_duration_since(seen.since));
        if quiet >= rules.settle {
            Ok(())
        } else {
            Err(Hold::Settling {
                quiet,
                settle: rules.settle,
            })
        }
    }

    /// An OS event says the file at `path` is complete as it is now (it was moved in).
    pub fn hint_complete(&mut self, path: &Path, stamp: Stamp) {
        let now = Instant::now();
        let s = self.seen.entry(path.to_path_buf()).or_insert(Seen {
            stamp,
            since: now,
            complete: None,
        });
        s.complete = Some(stamp);
    }

    /// Drops what is no longer present.
    pub fn retain(&mut self, present: impl Fn(&Path) -> bool) {
        self.seen.retain(|p, _| present(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn names_are_ignored_by_rule() {
        let r = Rules::new(
            &["*.part".to_string()],
            Some(".done".into()),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(r.ignored(".x.csv"), Some(Hold::Hidden));
        assert!(matches!(
            r.ignored("a.csv.part"),
            Some(Hold::TempName { .. })
        ));
        assert_eq!(r.ignored("a.csv.done"), Some(Hold::IsMarker));
        assert_eq!(r.ignored("a.csv"), None);
        let d = Rules::default();
        for n in ["a.tmp", "a.filepart", "a~", "a.crdownload", "a.swp"] {
            assert!(d.ignored(n).is_some(), "{n}");
        }
    }

    #[test]
    fn scan_walks_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::create_dir_all(p.join("sales/q1")).unwrap();
        fs::create_dir_all(p.join(".hidden")).unwrap();
        fs::write(p.join("sales/q1/a.csv"), "x").unwrap();
        fs::write(p.join("b.csv.part"), "x").unwrap();
        fs::write(p.join(".hidden/c.csv"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("link.csv")).unwrap();
        let s = scan(p, &Rules::default(), &[]);
        let found: Vec<(String, EntryKind)> = s
            .entries
            .iter()
            .map(|e| (e.rel.display(), e.kind))
            .collect();
        assert_eq!(
            found,
            [
                ("link.csv".to_string(), EntryKind::Symlink),
                ("sales/q1/a.csv".to_string(), EntryKind::File)
            ]
        );
        assert_eq!(s.ignored.len(), 1);
    }

    #[test]
    fn quiet_period_and_hints() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.csv");
        fs::write(&f, "x").unwrap();
        let rules = Rules::new(&[], None, Duration::from_secs(5)).unwrap();
        let entry = || scan(dir.path(), &rules, &[]).entries.remove(0);
        let mut r = Readiness::default();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        assert!(matches!(
            r.check(&rules, &entry(), t0, wall),
            Err(Hold::Settling { .. })
        ));
        // Unchanged across looks for the quiet period: ready.
        assert!(r
            .check(&rules, &entry(), t0 + Duration::from_secs(6), wall)
            .is_ok());
        // Old by its own mtime: ready at first look.
        let mut r2 = Readiness::default();
        assert!(r2
            .check(&rules, &entry(), t0, wall + Duration::from_secs(10))
            .is_ok());
        // Moved in: ready at once.
        let mut r3 = Readiness::default();
        let e = entry();
        r3.hint_complete(&e.path, e.stamp);
        assert!(r3.check(&rules, &e, t0, wall).is_ok());
    }

    #[test]
    fn done_markers_hold_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.csv");
        fs::write(&f, "x").unwrap();
        let rules = Rules::new(&[], Some(".ok".into()), Duration::from_secs(5)).unwrap();
        let e = scan(dir.path(), &rules, &[]).entries.remove(0);
        let mut r = Readiness::default();
        assert!(matches!(
            r.check(&rules, &e, Instant::now(), SystemTime::now()),
            Err(Hold::NoMarker { .. })
        ));
        fs::write(dir.path().join("a.csv.ok"), "").unwrap();
        assert!(r
            .check(&rules, &e, Instant::now(), SystemTime::now())
            .is_ok());
    }
}
