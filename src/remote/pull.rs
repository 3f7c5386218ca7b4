//! The fetch protocol: each remote file and version is loaded once, across hosts.
//!
//! 1. **List** the source (`Place::list`); names that cannot be fetched safely, links and
//!    folders too deep are noted, not fetched.
//! 2. **Judge readiness** as for local files: temp names and hidden names are skipped, a
//!    `done_marker` must be listed beside the file, and size and modification time must be the
//!    same in a second listing `settle` later.
//! 3. **Claim** the file's `(source, path, version)` in the store under this process's owner
//!    token. A claim held by a live owner (this host or another) is left alone; one whose owner
//!    died is taken over (one conditional update decides); a version already loaded is never
//!    downloaded again.
//! 4. **Download** into `processing/.fetch/`, streaming; the bytes received must be the listed
//!    size and the file, stat'ed again, still the same version — else the download is
//!    discarded and the claim dropped, nothing recorded, and the next listing judges it again.
//! 5. **Hand over**: the download becomes a claim of this process in `processing/`, as if it
//!    had been dropped at `incoming/<into>/<remote path>`, and goes through the pipeline like
//!    any file (dataset rules, content identity, parse, store, archive). Its ledger row names
//!    the source, remote path and version.
//! 6. **After the commit** (`after::finish`, `after::committed`): a file whose ledger row committed is `loaded`, then
//!    disposed of as `after` says (only if the remote file is still that version) and
//!    `finished`; a disposal that fails is retried at the next pull and never loads the file
//!    again. A file that did not commit (put back) has its claim dropped.
//!
//! A process that dies holding claims: its downloads in `processing/` are recovered like any
//! claim (content identity makes the re-download that follows a duplicate), and its claims in
//! the store are taken over once its owner is dead.

use super::after::dispose;
use super::{connect, local_rel, Place, Refused, RemoteFile};
use crate::config::{After, Config, SourceSpec};
use crate::discover::Hold;
use crate::events::{Event, Summary};
use crate::hash::{FileHash, Hasher};
use crate::pipeline::{Pipeline, Session, Work};
use crate::shutdown::Shutdown;
use crate::store::{RemoteKey, RemoteRow, RemoteState, Store};
use anyhow::{Context, Result};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a pull handed to the pipeline, and what went wrong with whole sources.
#[derive(Default)]
pub struct Pull {
    pub(super) fetched: Vec<(Arc<SourceSpec>, Vec<RemoteKey>)>,
    /// Sources refused for good (host key, login, a missing secret): `run` exits 2; the others
    /// that failed are reported as `left` (exit 5).
    pub refused: Vec<String>,
    /// Remote files that wait, and why (shown with the run's waiting files).
    pub held: Vec<(String, Hold)>,
}

impl Pull {
    /// How many remote files were handed to the pipeline.
    pub fn fetched(&self) -> usize {
        self.fetched.iter().map(|(_, k)| k.len()).sum()
    }
}

/// Pulls every source (or the one named) once: list, claim, download, hand over. Each source
/// on its own: one that fails is reported and the others go on.
pub fn pull(
    session: &Session,
    pipeline: &Pipeline,
    stop: &Shutdown,
    only: Option<&str>,
    summary: &mut Summary,
) -> Result<Pull> {
    let cfg = &session.cfg;
    let mut out = Pull::default();
    let sources: Vec<&Arc<SourceSpec>> = cfg
        .sources
        .iter()
        .filter(|s| only.is_none_or(|o| s.name == o))
        .collect();
    if sources.is_empty() {
        return Ok(out);
    }
    let mut store = crate::store::open(&cfg.store)?;
    for spec in sources {
        if stop.is_triggered() {
            break;
        }
        match pull_source(session, pipeline, stop, spec, &mut *store, summary) {
            Ok(polled) => {
                out.held.extend(polled.held);
                out.fetched.push((spec.clone(), polled.keys));
            }
            Err(e) => {
                let why = format!("{e:#}");
                tracing::error!(source = %spec.name, error = %why, "cannot pull this source");
                Event::Left {
                    path: &format!("{} ({})", spec.name, spec.url),
                    why: &why,
                }
                .emit(summary);
                if e.downcast_ref::<Refused>().is_some() {
                    out.refused.push(format!("source {}: {why}", spec.name));
                }
            }
        }
    }
    Ok(out)
}

/// What one pull of a source did.
#[derive(Default)]
pub struct Polled {
    /// Files handed to the pipeline.
    pub keys: Vec<RemoteKey>,
    /// Files in the listing, and of those ready to fetch.
    pub listed: usize,
    pub ready: usize,
    /// Downloads that failed (retried at the next pull).
    pub failed: usize,
    pub bytes: u64,
    /// Files that wait, and why (where they would land under `incoming/`).
    pub held: Vec<(String, Hold)>,
}

/// A remote file ready to be fetched, and the owner whose claim it takes over, if any.
struct Ready {
    file: RemoteFile,
    rel: crate::spool::RelPath,
    dead: Option<String>,
}

pub(super) fn pull_source(
    session: &Session,
    pipeline: &Pipeline,
    stop: &Shutdown,
    spec: &Arc<SourceSpec>,
    store: &mut dyn Store,
    summary: &mut Summary,
) -> Result<Polled> {
    let cfg = &session.cfg;
    let owner = session
        .owner
        .as_ref()
        .context("pulling a source needs a claim identity")?;
    let mut place = connect(spec)?;
    let known: HashMap<(String, String), RemoteRow> = store
        .remote_files(&spec.name)?
        .into_iter()
        .map(|r| ((r.key.path.clone(), r.key.version.clone()), r))
        .collect();
    // Disposals an earlier pull could not finish.
    for row in known.values().filter(|r| r.state == RemoteState::Loaded) {
        dispose(cfg, &mut *place, store, spec, &row.key);
    }
    let (listed, problems) = list(&mut *place)?;
    for (path, why) in problems {
        note(summary, spec, &path, &why);
    }
    let names: HashSet<&str> = listed.iter().map(|f| f.path.as_str()).collect();
    // What the store keeps of a source is bounded by what the source holds: finished files no
    // longer listed (deleted, moved, replaced by a new version) are forgotten. One that comes
    // back is downloaded again and caught by content identity.
    let now: HashSet<(&str, &str)> = listed
        .iter()
        .map(|f| (f.path.as_str(), f.version.as_str()))
        .collect();
    let gone: Vec<RemoteKey> = known
        .values()
        .filter(|r| r.state == RemoteState::Finished)
        .filter(|r| !now.contains(&(r.key.path.as_str(), r.key.version.as_str())))
        .map(|r| r.key.clone())
        .collect();
    if !gone.is_empty() {
        store.remote_forget(&gone)?;
    }
    let mut ready = Vec::new();
    let mut held = Vec::new();
    for f in &listed {
        match judge(cfg, spec, f, &names) {
            Judged::Take => {}
            Judged::Skip => continue,
            Judged::Hold(h) => {
                held.push((shown(spec, &f.path), h));
                continue;
            }
        }
        let rel = match local_rel(spec, &f.path) {
            Ok(r) => r,
            Err(why) => {
                note(summary, spec, &f.path, &why);
                continue;
            }
        };
        let key = key_of(spec, f);
        let dead = match known.get(&(f.path.clone(), f.version.clone())) {
            None => None,
            Some(r) if r.state != RemoteState::Claimed => continue,
            Some(r) => {
                let holder = r.owner.clone().unwrap_or_default();
                if holder == owner.token()
                    || !session.liveness.any_dead(std::slice::from_ref(&holder))?
                {
                    continue;
                }
                // Its owner died: if its file committed, only the disposal is left.
                if store.remote_ledger(&key)?.is_some() {
                    store.remote_mark(&key, RemoteState::Loaded, None)?;
                    dispose(cfg, &mut *place, store, spec, &key);
                    continue;
                }
                Some(holder)
            }
        };
        ready.push(Ready {
            file: f.clone(),
            rel,
            dead,
        });
    }
    let ready = settled(cfg, spec, &mut *place, ready, stop, &mut held)?;
    // One transaction for every claim of this listing.
    let wanted: Vec<(RemoteKey, Option<String>)> = ready
        .iter()
        .map(|r| (key_of(spec, &r.file), r.dead.clone()))
        .collect();
    let granted = store.remote_claims(&wanted, owner.token())?;
    let queue: VecDeque<Ready> = ready
        .into_iter()
        .zip(granted)
        .filter_map(|(r, granted)| granted.then_some(r))
        .collect();
    let mut polled = Polled {
        listed: listed.len(),
        ready: queue.len(),
        held,
        ..Polled::default()
    };
    let sizes: HashMap<String, u64> = queue
        .iter()
        .map(|r| (r.file.path.clone(), r.file.size))
        .collect();
    let outcomes = fetch_all(session, pipeline, stop, spec, place, queue.len(), queue);
    for (key, result) in outcomes {
        match result {
            Ok(()) => {
                polled.bytes += sizes.get(&key.path).copied().unwrap_or(0);
                polled.keys.push(key);
            }
            Err(e) => {
                polled.failed += 1;
                store.remote_release(&key, owner.token())?;
                note(summary, spec, &key.path, &format!("{e:#}"));
            }
        }
    }
    Ok(polled)
}

/// What `config check` shows of a source: one listing judged as a pull would (no wait for
/// settling, nothing claimed or downloaded).
pub struct Survey {
    pub listed: usize,
    /// Files a pull would fetch (once they are quiet for `settle`).
    pub ready: Vec<String>,
    /// Files already loaded (this version).
    pub loaded: usize,
    pub problems: Problems,
    /// Files that wait, and why.
    pub held: Vec<(String, Hold)>,
}

pub fn survey(
    cfg: &Config,
    spec: &SourceSpec,
    store: Option<&mut Box<dyn Store>>,
) -> Result<Survey> {
    let mut place = connect(spec)?;
    let known: HashSet<(String, String)> = match store {
        Some(s) => s
            .remote_files(&spec.name)?
            .into_iter()
            .map(|r| (r.key.path, r.key.version))
            .collect(),
        None => HashSet::new(),
    };
    let (listed, mut problems) = list(&mut *place)?;
    let names: HashSet<&str> = listed.iter().map(|f| f.path.as_str()).collect();
    let mut out = Survey {
        listed: listed.len(),
        ready: Vec::new(),
        loaded: 0,
        problems: Vec::new(),
        held: Vec::new(),
    };
    for f in &listed {
        match judge(cfg, spec, f, &names) {
            Judged::Take => {}
            Judged::Skip => continue,
            Judged::Hold(h) => {
                out.held.push((shown(spec, &f.path), h));
                continue;
            }
        }
        if let Err(why) = local_rel(spec, &f.path) {
            problems.push((f.path.clone(), why));
        } else if known.contains(&(f.path.clone(), f.version.clone())) {
            out.loaded += 1;
        } else {
            out.ready.push(f.path.clone());
        }
    }
    out.problems = problems;
    Ok(out)
}

fn key_of(spec: &SourceSpec, f: &RemoteFile) -> RemoteKey {
    RemoteKey {
        source: spec.name.clone(),
        path: f.path.clone(),
        version: f.version.clone(),
    }
}

fn note(summary: &mut Summary, spec: &SourceSpec, path: &str, why: &str) {
    Event::Left {
        path: &format!("{}:{path}", spec.name),
        why,
    }
    .emit(summary);
}

/// What cannot be fetched, with the reason: (remote path, why).
type Problems = Vec<(String, String)>;

fn list(place: &mut dyn Place) -> Result<(Vec<RemoteFile>, Problems)> {
    let (mut files, mut problems) = (Vec::new(), Vec::new());
    place.list(&mut files, &mut problems)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((files, problems))
}

/// What readiness makes of a listed file, as for a local one.
enum Judged {
    /// To fetch.
    Take,
    /// Not a file of this source: outside `match`, in the `move:` folder, a done marker.
    Skip,
    /// Waits, for a reason reports show: a hidden or temp name, its done marker not there yet.
    Hold(Hold),
}

/// Readiness of a listed file (one verdict for pull, `config check` and `run --dry-run`).
fn judge(cfg: &Config, spec: &SourceSpec, f: &RemoteFile, names: &HashSet<&str>) -> Judged {
    if spec.matcher.as_ref().is_some_and(|m| !m.is_match(&f.path)) {
        return Judged::Skip;
    }
    // Files `after = "move:…"` put inside the source's own folder are done with.
    if moved_into(spec).is_some_and(|to| f.path.starts_with(&format!("{to}/"))) {
        return Judged::Skip;
    }
    if f.path.split('/').any(|p| p.starts_with('.')) {
        return Judged::Hold(Hold::Hidden);
    }
    let name = f.path.rsplit('/').next().unwrap_or(&f.path);
    match cfg.rules.ignored(name) {
        Some(Hold::IsMarker) => return Judged::Skip,
        Some(h) => return Judged::Hold(h),
        None => {}
    }
    if let Some(m) = &cfg.rules.done_marker {
        if !names.contains(format!("{}{m}", f.path).as_str()) {
            return Judged::Hold(Hold::NoMarker { marker: m.clone() });
        }
    }
    // Within its time's window (the minute of an FTP `ls -l` line) a rewrite would not change
    // the version: taken once that window is over (by ferry's clock, a second of skew allowed).
    // A time further ahead than one window is the server's clock or time zone (`ls -l` lines in
    // local time), not a recent write: waiting for it would hold the file for hours.
    if f.granularity > 0 {
        let now = chrono::Utc::now().timestamp();
        let over = f.mtime + f.granularity + 1;
        if now < over && over - now <= f.granularity + 1 {
            return Judged::Hold(Hold::Settling {
                quiet: Duration::from_secs(now.saturating_sub(f.mtime).max(0) as u64),
                settle: Duration::from_secs((f.granularity + 1) as u64),
            });
        }
    }
    Judged::Take
}

/// Where a remote file would land under `incoming/`, for reports.
fn shown(spec: &SourceSpec, path: &str) -> String {
    format!("{}/{path}", spec.into)
}

/// The folder `after = "move:…"` names, relative to the source's folder, when it is inside it.
fn moved_into(spec: &SourceSpec) -> Option<String> {
    let After::Move(to) = &spec.after else {
        return None;
    };
    if !to.starts_with('/') {
        return Some(to.trim_start_matches("./").to_string());
    }
    to.strip_prefix(&format!("{}/", spec.path.trim_end_matches('/')))
        .map(str::to_string)
}

/// The files still the same (size and modification time) in a listing `settle` after the
/// first; the others are judged again at the next pull.
fn settled(
    cfg: &Config,
    spec: &SourceSpec,
    place: &mut dyn Place,
    ready: Vec<Ready>,
    stop: &Shutdown,
    held: &mut Vec<(String, Hold)>,
) -> Result<Vec<Ready>> {
    let settle = spec.settle.unwrap_or(cfg.rules.settle);
    if ready.is_empty() || settle.is_zero() {
        return Ok(ready);
    }
    let until = Instant::now() + settle;
    while Instant::now() < until {
        if stop.is_triggered() {
            return Ok(Vec::new());
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
    }
    let (again, _) = list(place)?;
    let now: HashMap<&str, &RemoteFile> = again.iter().map(|f| (f.path.as_str(), f)).collect();
    let (quiet, changing): (Vec<Ready>, Vec<Ready>) = ready
        .into_iter()
        .partition(|r| now.get(r.file.path.as_str()) == Some(&&r.file));
    held.extend(changing.into_iter().map(|r| {
        let h = Hold::Settling {
            quiet: Duration::ZERO,
            settle,
        };
        (shown(spec, &r.file.path), h)
    }));
    Ok(quiet)
}

/// Downloads the queued files on up to `connections` connections (the first is `place`) and
/// hands each to the pipeline; returns each file's outcome.
fn fetch_all(
    session: &Session,
    pipeline: &Pipeline,
    stop: &Shutdown,
    spec: &Arc<SourceSpec>,
    place: Box<dyn Place>,
    n: usize,
    queue: VecDeque<Ready>,
) -> Vec<(RemoteKey, Result<()>)> {
    let queue = Mutex::new(queue);
    let results = Mutex::new(Vec::new());
    let seq = AtomicU64::new(0);
    let first = Mutex::new(Some(place));
    let threads = spec.connections.min(n).max(1);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut place: Option<Box<dyn Place>> = first.lock().expect("not poisoned").take();
                loop {
                    let Some(r) = queue.lock().expect("not poisoned").pop_front() else {
                        return;
                    };
                    let key = key_of(spec, &r.file);
                    let result = if stop.is_triggered() || session.halted() {
                        Err(anyhow::anyhow!("stopped before it was downloaded"))
                    } else {
                        let p = match place.take() {
                            Some(p) => Ok(p),
                            None => connect(spec),
                        };
                        p.and_then(|mut p| {
                            let cancel = || stop.is_triggered() || session.halted();
                            let r = fetch(session, pipeline, &mut *p, (&r, &key), &seq, &cancel);
                            // A connection that failed is not reused.
                            if r.is_ok() {
                                place = Some(p);
                            }
                            r
                        })
                    };
                    results.lock().expect("not poisoned").push((key, result));
                }
            });
        }
    });
    results.into_inner().expect("not poisoned")
}

/// One file: downloaded, verified, claimed into `processing/`, handed to the pipeline.
fn fetch(
    session: &Session,
    pipeline: &Pipeline,
    place: &mut dyn Place,
    (r, key): (&Ready, &RemoteKey),
    seq: &AtomicU64,
    cancel: &dyn Fn() -> bool,
) -> Result<()> {
    let cfg = &session.cfg;
    let owner = session.owner.as_ref().context("no claim identity")?;
    let dir = cfg.spool.processing.join(".fetch");
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(
        "{}.{}.part",
        owner.token(),
        seq.fetch_add(1, Ordering::Relaxed)
    ));
    let result = download(place, &r.file, &tmp, cancel).and_then(|hashed| {
        let origin = Arc::new(key.clone());
        let claim = owner.claim_fetched(&cfg.spool, &tmp, &r.rel, (origin, hashed))?;
        if !pipeline.submit(Work::Claimed {
            claim,
            attempt: 1,
            retry_of: None,
        }) {
            // The pipeline stopped: the claim waits in processing/ for the next start.
            tracing::warn!(path = %r.file.path, "the pipeline stopped before this download");
        }
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("fetching {}", r.file.path))
}

/// A download's file: hashes what is written (the pipeline then needs no hash pass of its
/// own), and stops taking bytes once a stop is asked for (a big download is cut within one
/// read, not finished first).
struct Download<'a, W> {
    inner: W,
    hasher: Hasher,
    cancel: &'a dyn Fn() -> bool,
}

impl<W: Write> Write for Download<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if (self.cancel)() {
            return Err(std::io::Error::other("stopped while it was downloaded"));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Streams the remote file into `tmp` and checks it is complete and unchanged; the SHA-256
/// and length of what was written.
fn download(
    place: &mut dyn Place,
    file: &RemoteFile,
    tmp: &Path,
    cancel: &dyn Fn() -> bool,
) -> Result<(FileHash, u64)> {
    let mut out = Download {
        inner: std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(tmp)?,
        ),
        hasher: Hasher::default(),
        cancel,
    };
    let got = place.read(&file.path, &mut out, file.size)?;
    out.flush()?;
    if got != file.size {
        anyhow::bail!(
            "{got} bytes came where the listing said {}: it changed while it was downloaded \
             (it is fetched again once it settles)",
            file.size
        );
    }
    match place.stat(&file.path)? {
        Some(now) if now == *file => Ok(out.hasher.finish()),
        _ => anyhow::bail!(
            "it changed (or went) while it was downloaded; it is fetched again once it settles"
        ),
    }
}

/// Where partial downloads go (`processing/.fetch/`) and containers are unpacked
/// (`processing/.unpack/`): ignored by recovery (dot folders); leftovers of dead owners are
/// removed by `tidy` (the container is opened again from its claim).
pub fn tidy(cfg: &Config, session: &Session) {
    for area in [".fetch", ".unpack"] {
        tidy_area(&cfg.spool.processing.join(area), session);
    }
}

fn tidy_area(dir: &std::path::Path, session: &Session) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(token) = name.split('.').next() else {
            continue;
        };
        let mine = session.owner.as_ref().is_some_and(|o| o.token() == token);
        if !mine
            && session
                .liveness
                .any_dead(&[token.to_string()])
                .unwrap_or(false)
        {
            let p = e.path();
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}
