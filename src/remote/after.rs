//! After the commit: a pulled file whose ledger row committed is `loaded`, then disposed of as
//! `after` says — only while the remote file is still the version loaded — and `finished`. A
//! disposal that fails is recorded and retried at the next pull; it never loads the file again.

use super::pull::Pull;
use super::{connect, Place};
use crate::config::{After, Config, SourceSpec};
use crate::pipeline::Session;
use crate::store::{RemoteKey, RemoteState, Store};
use anyhow::{Context, Result};

/// After the pipeline finished: each fetched file whose ledger row committed is loaded, then
/// disposed of; one that did not commit has its claim dropped, to be judged again.
pub fn finish(session: &Session, pull: &Pull) -> Result<()> {
    if pull.fetched() == 0 {
        return Ok(());
    }
    let mut store = crate::store::open(&session.cfg.store)?;
    for (spec, keys) in &pull.fetched {
        committed(session, &mut *store, spec, keys, true)?;
    }
    Ok(())
}

/// Of files handed to the pipeline, those whose ledger row committed are loaded, then disposed
/// of as `after` says. The others: with `release` (the pipeline is done with them: they were
/// put back) their claims are dropped; without, they are still in the pipeline and returned.
pub fn committed(
    session: &Session,
    store: &mut dyn Store,
    spec: &SourceSpec,
    keys: &[RemoteKey],
    release: bool,
) -> Result<Vec<RemoteKey>> {
    let cfg = &session.cfg;
    let owner = session.owner.as_ref().context("no claim identity")?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    // One transaction: which files committed (loaded; finished when they are kept), and the
    // claims of the others dropped when the pipeline is done with them.
    let state = if spec.after == After::Keep {
        RemoteState::Finished
    } else {
        RemoteState::Loaded
    };
    let done = store.remote_committed(keys, state, owner.token(), release)?;
    let mut place: Option<Box<dyn Place>> = None;
    let mut pending = Vec::new();
    for (key, loaded) in keys.iter().zip(done) {
        if !loaded {
            if !release {
                pending.push(key.clone());
            }
            continue;
        }
        if spec.after == After::Keep {
            continue;
        }
        if place.is_none() {
            match connect(spec) {
                Ok(p) => place = Some(p),
                Err(e) => {
                    let why = format!("{e:#}");
                    tracing::warn!(source = %spec.name, error = %why,
                        "cannot connect to dispose of loaded files; retried at the next pull");
                    store.remote_mark(key, RemoteState::Loaded, Some(&why))?;
                    continue;
                }
            }
        }
        if let Some(p) = place.as_mut() {
            dispose(cfg, &mut **p, store, spec, key);
        }
    }
    Ok(pending)
}

/// Does what `after` says with a loaded remote file — only while it is still the version that
/// was loaded (a new upload under the same name is a new file, left for the next listing) —
/// then marks it finished. A failure is recorded and retried at the next pull.
pub(super) fn dispose(
    cfg: &Config,
    place: &mut dyn Place,
    store: &mut dyn Store,
    spec: &SourceSpec,
    key: &RemoteKey,
) {
    let result = (|| -> Result<()> {
        let current = place.stat(&key.path)?;
        if current.is_some_and(|f| f.version == key.version) {
            match &spec.after {
                After::Keep => {}
                After::Delete => place.remove(&key.path)?,
                After::Move(to) => {
                    // A file of the same name moved there before (an earlier version) stays:
                    // this one gets its version in its name.
                    let mut target = format!("{to}/{}", key.path);
                    if place.stat(&target)?.is_some() {
                        target = format!("{target}.{}", key.version.replace(':', "-"));
                    }
                    place.rename(&key.path, &target)?
                }
            }
            if let (Some(m), false) = (&cfg.rules.done_marker, spec.after == After::Keep) {
                let _ = place.remove(&format!("{}{m}", key.path));
            }
        }
        Ok(())
    })();
    let marked = match result {
        Ok(()) => store.remote_mark(key, RemoteState::Finished, None),
        Err(e) => {
            let why = format!("{e:#}");
            tracing::warn!(source = %spec.name, path = %key.path, error = %why,
                "cannot dispose of a loaded remote file; retried at the next pull");
            store.remote_mark(key, RemoteState::Loaded, Some(&why))
        }
    };
    if let Err(e) = marked {
        tracing::warn!(
            error = format!("{e:#}"),
            "cannot record a remote file's disposal"
        );
    }
}
