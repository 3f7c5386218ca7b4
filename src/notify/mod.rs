//! Telling senders and systems what became of each file: receipts (`receipts = "<folder or
//! URL>"` on a dataset or a source) and a webhook (`[notify]`).
//!
//! Each is a *channel* with state in the store (`ferry_channels`, `ferry_deliveries`): a file
//! that finished (ingested, duplicate, quarantined) after the channel opened, of the dataset or
//! source it covers, is owed one notice until one is recorded as delivered. Delivery runs
//! after loading (`ferry run`, once its files are in) or beside it (`ferry watch`, a thread of
//! its own), never in the way of a file: a receipt folder or receiver that is down leaves
//! notices owed, retried with back-off (5 s doubling to an hour), shown in `status` and
//! `/metrics`.
//!
//! Exactly one receipt per finished file: the receipt is built from the ledger alone (the same
//! bytes every attempt), written under its final name only when whole (`export::outbox`: temp
//! name and rename, or a put that appears whole), and recorded as delivered after. A crash in
//! between writes the same file again under the same name. A webhook is called at least once
//! per file, with an idempotency key a receiver deduplicates on.

pub mod receipt;
pub mod webhook;

use crate::config::{Config, Receipts, SourceSpec};
use crate::export::outbox::Outbox;
use crate::export::To;
use crate::shutdown::Shutdown;
use crate::store::{now, ChannelStatus, Covers, FileRow, Store};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Files read from the store per query.
const BATCH: u64 = 100;
/// The first retry's wait; each failure doubles it, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Failures in a row after which a channel waits for its next pass.
const GIVE_UP_AFTER: u32 = 3;

/// A delivery channel, from the config.
pub struct Channel {
    /// Its identity in the store.
    pub key: String,
    pub covers: Covers,
    kind: Kind,
}

enum Kind {
    /// Receipts of a dataset's files, or of a source's (which may write them back to the
    /// source's own server).
    Receipts(Receipts, Option<Arc<SourceSpec>>),
    Webhook(crate::config::Notify),
}

/// Every channel the config has.
pub fn channels(cfg: &Config) -> Vec<Channel> {
    let mut out = Vec::new();
    for d in &cfg.datasets {
        if let Some(r) = &d.receipts {
            out.push(Channel {
                key: format!("receipts:dataset:{}", d.name),
                covers: Covers::Dataset(d.name.clone()),
                kind: Kind::Receipts(r.clone(), None),
            });
        }
    }
    for s in &cfg.sources {
        if let Some(r) = &s.receipts {
            out.push(Channel {
                key: format!("receipts:source:{}", s.name),
                covers: Covers::Source(s.name.clone()),
                kind: Kind::Receipts(r.clone(), Some(s.clone())),
            });
        }
    }
    if let Some(n) = &cfg.notify {
        out.push(Channel {
            key: "webhook".into(),
            covers: Covers::All,
            kind: Kind::Webhook(n.clone()),
        });
    }
    out
}

/// The channels' keys and what each covers (for `Store::channels`).
pub fn covers(cfg: &Config) -> Vec<(String, Covers)> {
    channels(cfg)
        .into_iter()
        .map(|c| (c.key, c.covers))
        .collect()
}

/// What one delivery pass did.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Delivered {
    pub delivered: u64,
    pub failed: u64,
}

/// Where a channel's notices go, opened on its first due file.
enum Sender {
    Receipts { out: Outbox, rejects_csv: bool },
    Webhook(webhook::Webhook),
}

/// Delivers every notice due now, channel by channel. A channel whose place cannot be reached,
/// or fails three files in a row, is left for the next pass (each failure recorded, retried
/// after its back-off).
pub fn deliver(cfg: &Config, store: &mut dyn Store, stop: &Shutdown) -> Result<Delivered> {
    let mut done = Delivered::default();
    for ch in channels(cfg) {
        store.channel_open(&ch.key)?;
        // What a pass reads: files from the oldest owed one (at most an hour back when nothing
        // older is owed), not every file since the channel opened.
        let horizon = (chrono::Utc::now() - chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        store.channel_advance(&ch.key, &ch.covers, &horizon)?;
        let mut sender: Option<Sender> = None;
        // Failures in a row: a place that fails every file is left for the next pass.
        let mut failing = 0;
        'channel: while !stop.is_triggered() {
            let due = store.deliveries_due(&ch.key, &ch.covers, &now(), BATCH)?;
            if due.is_empty() {
                break;
            }
            for (row, attempts) in due {
                if stop.is_triggered() {
                    break 'channel;
                }
                let reaching = sender.is_none();
                let sent = match &mut sender {
                    Some(s) => deliver_one(cfg, store, &ch, s, &row),
                    None => open(cfg, &ch)
                        .and_then(|s| deliver_one(cfg, store, &ch, sender.insert(s), &row)),
                };
                match sent {
                    Ok(name) => {
                        crate::faults::notice_die();
                        store.delivery_done(&ch.key, row.id, &name)?;
                        done.delivered += 1;
                        failing = 0;
                    }
                    Err(e) => {
                        let why = format!("{e:#}");
                        let wait = FIRST_BACKOFF
                            .saturating_mul(1u32 << attempts.min(16))
                            .min(MAX_BACKOFF);
                        let retry_at = (chrono::Utc::now()
                            + chrono::Duration::from_std(wait).unwrap_or_default())
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                        store.delivery_failed(&ch.key, row.id, &why, &retry_at)?;
                        done.failed += 1;
                        failing += 1;
                        tracing::warn!(
                            channel = %ch.key,
                            file = %row.path,
                            id = row.id,
                            error = %why,
                            retry_in_s = wait.as_secs(),
                            "notice not delivered; trying again later"
                        );
                        // A connection that failed is opened again for the next file.
                        if matches!(sender, Some(Sender::Receipts { .. })) {
                            sender = None;
                        }
                        // A place that could not be reached (each try may take its timeout)
                        // or that failed three files in a row waits for the next pass.
                        if sender.is_none() && reaching || failing >= GIVE_UP_AFTER {
                            break 'channel;
                        }
                    }
                }
            }
        }
    }
    Ok(done)
}

fn deliver_one(
    cfg: &Config,
    store: &mut dyn Store,
    ch: &Channel,
    sender: &mut Sender,
    row: &FileRow,
) -> Result<String> {
    let errors = store.rejects(row.id, Some(receipt::FIRST_ERRORS))?;
    match sender {
        Sender::Webhook(hook) => {
            let body = body(&receipt::build(row, &errors, None))?;
            hook.post(row, &body)?;
            Ok("POST".into())
        }
        Sender::Receipts { out, rejects_csv } => {
            // `<file>.<sha12>.receipt.json`; a name another file of the channel already has
            // (the same file sent again, a retried file's new outcome) gets the ledger id too.
            let stem = receipt::stem(row);
            let mut name = format!("{stem}.receipt.json");
            if store.delivery_name_taken(&ch.key, &name, row.id)? {
                name = format!("{stem}.{}.receipt.json", row.id);
            }
            let rejects = (*rejects_csv && row.rejected > 0)
                .then(|| format!("{}.rejects.csv", name.trim_end_matches(".receipt.json")));
            if let Some(r) = &rejects {
                let all = store.rejects(row.id, None)?;
                let records = row
                    .stored_at
                    .as_deref()
                    .filter(|_| row.pruned_at.is_none())
                    .and_then(|at| {
                        let spec = cfg
                            .datasets
                            .iter()
                            .find(|d| Some(d.name.as_str()) == row.dataset.as_deref())
                            .cloned()?;
                        receipt::rejected_records(
                            &cfg.spool.resolve(at),
                            receipt::file_name(row),
                            &spec,
                            &all,
                        )
                    });
                let csv = records.unwrap_or_else(|| receipt::rejects_csv(&all));
                out.publish_bytes(r, &csv)?;
            }
            let body = body(&receipt::build(row, &errors, rejects))?;
            // The receipt last: once it is there, so is everything it names.
            out.publish_bytes(&name, &body)?;
            out.sync()?;
            Ok(name)
        }
    }
}

fn body(r: &receipt::Receipt) -> Result<Vec<u8>> {
    let mut b = serde_json::to_vec_pretty(r)?;
    b.push(b'\n');
    Ok(b)
}

fn open(cfg: &Config, ch: &Channel) -> Result<Sender> {
    Ok(match &ch.kind {
        Kind::Webhook(n) => Sender::Webhook(webhook::Webhook::new(n)?),
        Kind::Receipts(r, source) => {
            let to = destination(cfg, r, source.as_deref())?;
            let out = crate::export::open_place(&cfg.spool, &to, &ch.key)
                .with_context(|| format!("receipts to {}", to.shown()))?;
            Sender::Receipts {
                out,
                rejects_csv: r.rejects_csv,
            }
        }
    })
}

/// Where receipts go: a folder (relative: to the spool's root); a URL on the source's own
/// server (its login, host key, TLS and endpoint settings, another folder); the URL of a
/// `[[target]]` (its settings); any other URL with a source's defaults.
fn destination(cfg: &Config, r: &Receipts, source: Option<&SourceSpec>) -> Result<To> {
    if let Some(s) = source.and_then(|s| crate::config::same_server(s, &r.to)) {
        return Ok(To::Remote(Arc::new(s)));
    }
    let shown = crate::config::shown_url(&r.to);
    if let Some(t) = cfg.targets.iter().find(|t| Some(&t.url) == shown.as_ref()) {
        return Ok(To::Remote(t.clone()));
    }
    if let Some(url) = crate::config::remote_url(&r.to) {
        return Ok(To::Remote(Arc::new(url.map_err(anyhow::Error::msg)?)));
    }
    let dir = cfg.spool.root.join(&r.to);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the receipts folder {}", dir.display()))?;
    Ok(To::Folder(dir))
}

fn registry() -> &'static Mutex<BTreeMap<String, ChannelStatus>> {
    static R: OnceLock<Mutex<BTreeMap<String, ChannelStatus>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// The channels as the daemon's deliverer last counted them (for `/metrics`).
pub fn live() -> Vec<ChannelStatus> {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect()
}

/// Opens the config's channels before files are taken (`run` and `watch` start with it): the
/// files finished from then on are owed notices — not those finished before a channel existed.
pub fn open_channels(cfg: &Config) -> Result<()> {
    let chans = channels(cfg);
    if chans.is_empty() {
        return Ok(());
    }
    let mut store = crate::store::open(&cfg.store)?;
    for ch in chans {
        store.channel_open(&ch.key)?;
    }
    Ok(())
}

/// Delivers what is due and counts the channels again, logging failures: the end of a
/// `ferry run` (a dry run delivers nothing).
pub fn after_run(cfg: &Config, stop: &Shutdown) {
    if channels(cfg).is_empty() {
        return;
    }
    let pass = crate::store::open(&cfg.store).and_then(|mut s| pass(cfg, &mut *s, stop));
    if let Err(e) = pass {
        tracing::warn!(
            error = format!("{e:#}"),
            "notices: cannot deliver now; the next run tries again"
        );
    }
}

fn pass(cfg: &Config, store: &mut dyn Store, stop: &Shutdown) -> Result<Delivered> {
    let d = deliver(cfg, store, stop)?;
    let counted = store.channels(&covers(cfg))?;
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.clear();
    for c in counted {
        r.insert(c.channel.clone(), c);
    }
    Ok(d)
}

/// The daemon's deliverer: a pass every `every` until `stop`, on a thread of its own.
pub fn deliverer(
    live: Arc<std::sync::RwLock<Config>>,
    stop: Shutdown,
    every: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ferry-notices".into())
        .spawn(move || {
            let mut store: Option<Box<dyn Store>> = None;
            while !stop.is_triggered() {
                let cfg = live.read().unwrap_or_else(|p| p.into_inner()).clone();
                if !channels(&cfg).is_empty() {
                    let s = match store.take() {
                        Some(s) => Ok(s),
                        None => crate::store::open(&cfg.store),
                    };
                    match s.and_then(|mut s| pass(&cfg, &mut *s, &stop).map(|_| s)) {
                        Ok(s) => store = Some(s),
                        Err(e) => tracing::warn!(
                            error = format!("{e:#}"),
                            "notices: cannot deliver now; trying again"
                        ),
                    }
                }
                let until = std::time::Instant::now() + every;
                while std::time::Instant::now() < until && !stop.is_triggered() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
}
