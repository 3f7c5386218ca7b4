//! `ferry status [--json]`: files by state, records per dataset, quarantine, files in flight,
//! waiting files with the rule holding each, and the last activity.
//!
//! Reads the store and looks at the incoming folder; changes nothing.

use super::Outcome;
use crate::cli::StatusArgs;
use crate::config::Config;
use crate::discover::{self, Hold, Readiness};
use crate::report::{self, SourceState, Status, Waiting};
use crate::store::{self, FileState, RemoteState, Store};
use anyhow::Result;
use std::time::{Instant, SystemTime};

pub fn run(cfg: &Config, args: &StatusArgs) -> Result<Outcome> {
    let mut store = store::open_existing(&cfg.store)?;
    report::print(&gather(cfg, store.as_deref_mut())?, args.json)?;
    Ok(Outcome::Done)
}

/// The spool's state as `status` shows it (the daemon's status page too), from the store if it
/// has been set up.
pub fn gather(cfg: &Config, store: Option<&mut (dyn Store + 'static)>) -> Result<Status> {
    let mut st = Status {
        root: cfg.spool.root.display().to_string(),
        incoming: cfg.spool.incoming.display().to_string(),
        files: FileState::ALL.iter().map(|s| (*s, 0)).collect(),
        records: 0,
        rejected_records: 0,
        duplicate_records: 0,
        updated_records: 0,
        quarantined: 0,
        quarantine: Default::default(),
        datasets: Vec::new(),
        processing: 0,
        ready: 0,
        waiting: Vec::new(),
        last_activity: None,
        exports: Vec::new(),
        keys: Vec::new(),
        sources: Vec::new(),
        deliveries: Vec::new(),
    };
    let live = crate::remote::poll::status();
    if let Some(s) = store {
        st.files = s.state_counts()?;
        st.quarantine = s.quarantine_counts()?;
        st.quarantined = st.quarantine.open;
        st.datasets = s.dataset_counts()?;
        for d in &st.datasets {
            st.records += d.records;
            st.rejected_records += d.rejected_records;
            st.duplicate_records += d.duplicate_records;
            st.updated_records += d.updated_records;
        }
        st.last_activity = s.last_activity()?;
        st.exports = s.targets()?;
        st.keys = s.key_indexes()?;
        for spec in &cfg.sources {
            let mut src = SourceState {
                name: spec.name.clone(),
                url: spec.url.clone(),
                finished: 0,
                awaiting_disposal: 0,
                in_flight: 0,
                last_disposal_error: None,
                live: live.get(&spec.name).cloned(),
            };
            for row in s.remote_files(&spec.name)? {
                match row.state {
                    RemoteState::Finished => src.finished += 1,
                    RemoteState::Loaded => {
                        src.awaiting_disposal += 1;
                        src.last_disposal_error = row.error.or(src.last_disposal_error);
                    }
                    RemoteState::Claimed => src.in_flight += 1,
                }
            }
            st.sources.push(src);
        }
        st.deliveries = s.channels(&crate::notify::covers(cfg))?;
    }
    if let Ok(rd) = std::fs::read_dir(&cfg.spool.processing) {
        st.processing = rd
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count() as u64;
    }
    if cfg.spool.incoming.is_dir() {
        let scan = discover::scan(&cfg.spool.incoming, &cfg.rules, &cfg.spool.internal_dirs());
        let mut readiness = Readiness::default();
        let (now, wall) = (Instant::now(), SystemTime::now());
        for e in &scan.entries {
            if let Some(h) = cfg.hold(&e.rel) {
                st.waiting.push(Waiting::new(e.rel.display(), &h));
                continue;
            }
            match readiness.check(&cfg.rules, e, now, wall) {
                Ok(()) => st.ready += 1,
                Err(h) => st.waiting.push(Waiting::new(e.rel.display(), &h)),
            }
        }
        for (rel, h) in &scan.ignored {
            if *h != Hold::IsMarker {
                st.waiting.push(Waiting::new(rel.display(), h));
            }
        }
    }
    Ok(st)
}
