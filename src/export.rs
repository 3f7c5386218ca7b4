//! Outgoing batches: a dataset's records, not yet sent to a target, written as files a downstream
//! system can trust — complete under their final name, described by a manifest, marked done.
//!
//! The protocol, per batch:
//!
//! 1. **Plan** (one short write transaction): the next `max_rows` record ids after the target's
//!    watermark fix the batch — first id, last id, row count, name, format, creation time — and
//!    are recorded as the target's *pending* batch before a byte is written.
//! 2. **Write**: the data file under a hidden temp name in the target folder, fsync, rename to
//!    its final name, fsync the folder; then `<batch>.manifest.json` (temp, fsync, rename) and
//!    the empty `<batch>.done` marker, and the folder fsynced again.
//! 3. **Commit** (one transaction): the batch is recorded, the watermark moves to its last id, the
//!    pending batch is cleared.
//!
//! A crash anywhere leaves either nothing (before 1), or a pending batch: the next export first
//! rewrites exactly that batch — same records, same name, same bytes (its creation time is part
//! of the plan) — then carries on. Stray temp files are removed under the target's lock. So a
//! downstream reader never sees a partial file under a final name, never sees a record in two
//! batches, and never misses one.
//!
//! Record ids only grow in commit order (SQLite assigns the largest id plus one, and ferry never
//! deletes records), so "ids after the watermark" is exactly "records not yet exported".

use crate::config::ConfigError;
use crate::fsio;
use crate::ledger::{self, tables::ident, Ledger};
use crate::spool::Spool;
use anyhow::{bail, Context, Result};
use crossbeam_channel::bounded;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The columns every dataset table has that are ferry's bookkeeping, not the partner's data.
const INTERNAL: &[&str] = &["_id", "_file_id", "_line", "_key"];
/// Encoded bytes handed to the file-writing thread at a time.
const BUFFER: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    pub fn id(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }

    fn from_id(s: &str) -> Option<Format> {
        match s {
            "csv" => Some(Format::Csv),
            "ndjson" => Some(Format::Ndjson),
            _ => None,
        }
    }
}

/// What to export, and where.
#[derive(Debug, Clone)]
pub struct Request {
    pub dataset: String,
    /// The target folder (created if missing).
    pub dir: PathBuf,
    /// The target's name: its identity for the watermark.
    pub target: String,
    pub format: Format,
    pub gzip: bool,
    pub max_rows: u64,
}

/// One batch as planned and, once committed, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    name: String,
    format: Format,
    gzip: bool,
    first: i64,
    last: i64,
    rows: u64,
    created_at: String,
    /// The dataset's columns when the batch was planned: a column added since (schema drift)
    /// must not change a batch that is rewritten.
    columns: Vec<String>,
}

/// The manifest beside each batch. Field order is the file's order.
#[derive(Debug, Serialize)]
struct Manifest<'a> {
    dataset: &'a str,
    target: &'a str,
    file: &'a str,
    format: Format,
    compression: Option<&'static str>,
    rows: u64,
    first_record_id: i64,
    last_record_id: i64,
    columns: &'a [String],
    sha256: &'a str,
    bytes: u64,
    created_at: &'a str,
    ferry_version: &'static str,
}

/// A batch on disk.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub file: String,
    pub rows: u64,
    pub first_record_id: i64,
    pub last_record_id: i64,
    pub sha256: String,
    pub bytes: u64,
    /// True when this batch was planned by an earlier, interrupted export and written again.
    pub resumed: bool,
}

/// What an export did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub dataset: String,
    pub target: String,
    pub dir: String,
    pub batches: Vec<Batch>,
    pub rows: u64,
    pub watermark: i64,
    pub stray_temp_files_removed: u64,
}

/// Another export to the same target holds its lock.
#[derive(Debug, thiserror::Error)]
#[error("another export to target {target:?} of dataset {dataset:?} is running; try again when it is done")]
pub struct Busy {
    pub dataset: String,
    pub target: String,
}

/// A target as `ferry export --list` and `ferry status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub dataset: String,
    pub target: String,
    pub dir: String,
    pub watermark: i64,
    pub pending_records: u64,
    pub batches: u64,
    pub exported_records: u64,
    pub last_export: Option<String>,
    /// A batch planned by an export that did not finish (it is rewritten by the next one).
    pub interrupted_batch: Option<String>,
}

/// The dataset's table, from the ledger's own list of datasets.
fn table_of(conn: &Connection, dataset: &str) -> Result<String> {
    let t: Option<String> = conn
        .query_row(
            "SELECT table_name FROM datasets WHERE name = ?1",
            [dataset],
            |r| r.get(0),
        )
        .optional()?;
    match t {
        Some(t) => Ok(t),
        None => {
            let mut stmt = conn.prepare("SELECT name FROM datasets ORDER BY name")?;
            let known: Vec<String> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Err(ConfigError(format!(
                "no dataset named {dataset:?} in this spool (known: {})",
                if known.is_empty() {
                    "none yet".to_string()
                } else {
                    known.join(", ")
                }
            ))
            .into())
        }
    }
}

/// The partner's columns of a table, in table order.
fn data_columns(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let cols: Vec<String> = stmt
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(cols
        .into_iter()
        .filter(|c| !INTERNAL.contains(&c.as_str()))
        .collect())
}

/// A file-name-safe form of a dataset name.
fn file_stem(dataset: &str) -> String {
    dataset
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn batch_name(dataset: &str, first: i64, last: i64, format: Format, gzip: bool) -> String {
    format!(
        "{}-{first:012}-{last:012}.{}{}",
        file_stem(dataset),
        format.id(),
        if gzip { ".gz" } else { "" }
    )
}

/// The lock file of one target.
fn lock_path(spool: &Spool, dataset: &str, target: &str) -> PathBuf {
    let h = Sha256::digest(format!("{dataset}\0{target}").as_bytes());
    let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
    spool.root.join(".locks").join(format!("export-{hex}.lock"))
}

/// Exports everything not yet exported to the target; returns what was written.
pub fn export(spool: &Spool, req: &Request) -> Result<Summary> {
    let ledger = Ledger::open(&spool.db)?;
    let conn = &ledger.conn;
    let table = table_of(conn, &req.dataset).context("looking up the dataset")?;
    let _lock = fsio::try_lock_file(&lock_path(spool, &req.dataset, &req.target))
        .context("taking the export lock")?
        .ok_or_else(|| Busy {
            dataset: req.dataset.clone(),
            target: req.target.clone(),
        })?;
    fs::create_dir_all(&req.dir)
        .with_context(|| format!("creating the target folder {}", req.dir.display()))?;
    if let Some(other) = other_target_in(conn, req)? {
        return Err(ConfigError(format!(
            "{} is already the folder of target {other:?} of dataset {:?}: two targets in one \
             folder would write the same records twice. Use --target {other:?}, or another \
             folder",
            req.dir.display(),
            req.dataset
        ))
        .into());
    }
    let removed = remove_stray_temps(&req.dir, &req.dataset)?;
    conn.execute(
        "INSERT INTO exports (dataset, target, dir, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (dataset, target) DO UPDATE SET dir = excluded.dir",
        params![
            req.dataset,
            req.target,
            req.dir.display().to_string(),
            ledger::now()
        ],
    )
    .context("recording the export target")?;
    let mut summary = Summary {
        dataset: req.dataset.clone(),
        target: req.target.clone(),
        dir: req.dir.display().to_string(),
        batches: Vec::new(),
        rows: 0,
        watermark: 0,
        stray_temp_files_removed: removed,
    };
    loop {
        let Some((plan, resumed)) =
            plan_next(conn, &table, req).context("planning the next batch")?
        else {
            break;
        };
        crate::faults::export_die("planned");
        let written = write_batch(conn, &table, req, &plan)?;
        crate::faults::export_die("written");
        commit_batch(conn, req, &plan, &written)
            .with_context(|| format!("recording batch {} as exported", plan.name))?;
        tracing::info!(
            dataset = %req.dataset,
            target = %req.target,
            file = %plan.name,
            rows = plan.rows,
            first = plan.first,
            last = plan.last,
            resumed,
            "batch exported"
        );
        summary.rows += plan.rows;
        summary.batches.push(Batch {
            file: plan.name.clone(),
            rows: plan.rows,
            first_record_id: plan.first,
            last_record_id: plan.last,
            sha256: written.sha256,
            bytes: written.bytes,
            resumed,
        });
        crate::faults::export_pause();
    }
    summary.watermark = conn.query_row(
        "SELECT watermark FROM exports WHERE dataset = ?1 AND target = ?2",
        params![req.dataset, req.target],
        |r| r.get(0),
    )?;
    Ok(summary)
}

/// Another target of the dataset that writes into the request's folder (compared as canonical
/// paths), if any.
fn other_target_in(conn: &Connection, req: &Request) -> Result<Option<String>> {
    let mut stmt = conn.prepare("SELECT target, dir FROM exports WHERE dataset = ?1")?;
    let rows: Vec<(String, String)> = stmt
        .query_map([&req.dataset], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let here = req.dir.canonicalize().unwrap_or_else(|_| req.dir.clone());
    Ok(rows.into_iter().find_map(|(target, dir)| {
        let dir = Path::new(&dir);
        let same = dir.canonicalize().map_or(dir == here, |d| d == here);
        (same && target != req.target).then_some(target)
    }))
}

/// Removes temp files left in a target folder by an interrupted export of this dataset: hidden,
/// named after one of its batches, ending in `.ferry-tmp`. Runs under the target's lock.
fn remove_stray_temps(dir: &Path, dataset: &str) -> Result<u64> {
    let prefix = format!(".{}-", file_stem(dataset));
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix)
            && name.ends_with(fsio::TEMP_SUFFIX)
            && e.file_type()?.is_file()
        {
            fs::remove_file(e.path())?;
            n += 1;
        }
    }
    if n > 0 {
        fsio::sync_dir(dir)?;
    }
    Ok(n)
}

/// The target's pending batch if an earlier export was interrupted, else the next one planned
/// from the watermark; `None` when everything is exported.
fn plan_next(conn: &Connection, table: &str, req: &Request) -> Result<Option<(Plan, bool)>> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let r = (|| -> Result<Option<(Plan, bool)>> {
        let (watermark, pending): (i64, Option<Plan>) = conn.query_row(
            "SELECT watermark, pending_name, pending_format, pending_gzip, pending_first,
                    pending_last, pending_rows, pending_created_at, pending_columns
             FROM exports WHERE dataset = ?1 AND target = ?2",
            params![req.dataset, req.target],
            |r| {
                let name: Option<String> = r.get(1)?;
                let plan = match name {
                    Some(name) => Some(Plan {
                        name,
                        format: {
                            let f: String = r.get(2)?;
                            Format::from_id(&f).ok_or_else(|| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    2,
                                    rusqlite::types::Type::Text,
                                    format!("unknown batch format {f:?}").into(),
                                )
                            })?
                        },
                        gzip: r.get(3)?,
                        first: r.get(4)?,
                        last: r.get(5)?,
                        rows: r.get::<_, i64>(6)? as u64,
                        created_at: r.get(7)?,
                        columns: serde_json::from_str(&r.get::<_, String>(8)?).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                8,
                                rusqlite::types::Type::Text,
                                Box::new(e),
                            )
                        })?,
                    }),
                    None => None,
                };
                Ok((r.get(0)?, plan))
            },
        )?;
        if let Some(p) = pending {
            return Ok(Some((p, true)));
        }
        let (rows, first, last): (i64, Option<i64>, Option<i64>) = conn.query_row(
            &format!(
                "SELECT count(*), min(_id), max(_id) FROM \
                 (SELECT _id FROM {} WHERE _id > ?1 ORDER BY _id LIMIT ?2)",
                ident(table)
            ),
            params![watermark, req.max_rows as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(None);
        };
        // Read in the same transaction as the range: columns are added in the transaction that
        // stores their first values, so these are exactly the columns the range's records have.
        let columns = data_columns(conn, table)?;
        if columns.is_empty() {
            bail!("dataset {:?} has no columns to export", req.dataset);
        }
        let plan = Plan {
            name: batch_name(&req.dataset, first, last, req.format, req.gzip),
            format: req.format,
            gzip: req.gzip,
            first,
            last,
            rows: rows as u64,
            created_at: ledger::now(),
            columns,
        };
        conn.execute(
            "UPDATE exports SET pending_name = ?3, pending_format = ?4, pending_gzip = ?5,
                    pending_first = ?6, pending_last = ?7, pending_rows = ?8,
                    pending_created_at = ?9, pending_columns = ?10
             WHERE dataset = ?1 AND target = ?2",
            params![
                req.dataset,
                req.target,
                plan.name,
                plan.format.id(),
                plan.gzip,
                plan.first,
                plan.last,
                plan.rows as i64,
                plan.created_at,
                serde_json::to_string(&plan.columns)?
            ],
        )?;
        Ok(Some((plan, false)))
    })();
    match &r {
        Ok(_) => conn.execute_batch("COMMIT")?,
        Err(_) => {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    r
}

fn commit_batch(conn: &Connection, req: &Request, plan: &Plan, w: &Written) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let r = (|| -> Result<()> {
        conn.execute(
            "INSERT OR REPLACE INTO export_batches
                 (dataset, target, name, format, first_id, last_id, rows, sha256, bytes, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                req.dataset,
                req.target,
                plan.name,
                plan.format.id(),
                plan.first,
                plan.last,
                plan.rows as i64,
                w.sha256,
                w.bytes as i64,
                plan.created_at
            ],
        )?;
        conn.execute(
            "UPDATE exports SET watermark = ?3, batches = batches + 1, rows = rows + ?4,
                    exported_at = ?5, pending_name = NULL, pending_format = NULL,
                    pending_gzip = NULL, pending_first = NULL, pending_last = NULL,
                    pending_rows = NULL, pending_created_at = NULL, pending_columns = NULL
             WHERE dataset = ?1 AND target = ?2",
            params![
                req.dataset,
                req.target,
                plan.last,
                plan.rows as i64,
                ledger::now()
            ],
        )?;
        Ok(())
    })();
    match &r {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(_) => {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    r
}

/// The data file as written.
struct Written {
    sha256: String,
    bytes: u64,
}

/// Writes the data file, its manifest and its done marker, each visible only when complete.
fn write_batch(conn: &Connection, table: &str, req: &Request, plan: &Plan) -> Result<Written> {
    let dir = &req.dir;
    let final_path = dir.join(&plan.name);
    let tmp = fsio::temp_path(dir, plan.name.as_ref());
    let written = write_data(conn, table, plan, &tmp)
        .with_context(|| format!("writing {}", final_path.display()));
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, &final_path)?;
    fsio::sync_dir(dir)?;
    crate::faults::export_die("data");

    let manifest = Manifest {
        dataset: &req.dataset,
        target: &req.target,
        file: &plan.name,
        format: plan.format,
        compression: plan.gzip.then_some("gzip"),
        rows: plan.rows,
        first_record_id: plan.first,
        last_record_id: plan.last,
        columns: &plan.columns,
        sha256: &written.sha256,
        bytes: written.bytes,
        created_at: &plan.created_at,
        ferry_version: env!("CARGO_PKG_VERSION"),
    };
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    fsio::write_atomic(&dir.join(format!("{}.manifest.json", plan.name)), &json)?;
    fsio::write_atomic(&dir.join(format!("{}.done", plan.name)), b"")?;
    fsio::sync_dir(dir)?;
    Ok(written)
}

/// Counts and hashes what goes into the file.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads the batch's records and writes them to `tmp`, fsynced. Encoding runs on this thread,
/// hashing, compression and the writes on a second one, so the two overlap.
fn write_data(conn: &Connection, table: &str, plan: &Plan, tmp: &Path) -> Result<Written> {
    let columns = &plan.columns;
    let file = File::create(tmp)?;
    let (full_tx, full_rx) = bounded::<Vec<u8>>(2);
    let (empty_tx, empty_rx) = bounded::<Vec<u8>>(3);
    for _ in 0..3 {
        let _ = empty_tx.send(Vec::with_capacity(BUFFER + 64 * 1024));
    }
    let gzip = plan.gzip;
    let sink = std::thread::Builder::new()
        .name("ferry-export-io".into())
        .spawn(move || -> io::Result<(Written, File)> {
            let hashing = Hashing {
                inner: io::BufWriter::with_capacity(BUFFER, file),
                sha: Sha256::new(),
                bytes: 0,
            };
            let mut hashing = if gzip {
                // No name and mtime 0 in the gzip header: the same batch is the same bytes.
                let mut gz = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(hashing, flate2::Compression::default());
                for buf in full_rx {
                    gz.write_all(&buf)?;
                    let _ = empty_tx.send(reuse(buf));
                }
                gz.finish()?
            } else {
                let mut h = hashing;
                for buf in full_rx {
                    h.write_all(&buf)?;
                    let _ = empty_tx.send(reuse(buf));
                }
                h
            };
            hashing.flush()?;
            let file = hashing.inner.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            let sha = hashing.sha.finalize();
            Ok((
                Written {
                    sha256: sha.iter().map(|b| format!("{b:02x}")).collect(),
                    bytes: hashing.bytes,
                },
                file,
            ))
        })?;

    let encoded = (|| -> Result<u64> {
        let enc = Encoder::new(plan.format, columns);
        let mut buf = empty_rx.recv()?;
        enc.header(&mut buf);
        let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
        let mut stmt = conn.prepare(&format!(
            "SELECT {} FROM {} WHERE _id BETWEEN ?1 AND ?2 ORDER BY _id",
            cols.join(", "),
            ident(table)
        ))?;
        let mut rows = stmt.query(params![plan.first, plan.last])?;
        let mut n = 0u64;
        while let Some(row) = rows.next()? {
            for i in 0..columns.len() {
                enc.value(&mut buf, i, row.get_ref(i)?);
            }
            enc.end_row(&mut buf);
            n += 1;
            if buf.len() >= BUFFER {
                if full_tx.send(buf).is_err() {
                    return Ok(n); // the writing thread failed; its error is reported below
                }
                buf = empty_rx.recv()?;
            }
        }
        let _ = full_tx.send(buf);
        Ok(n)
    })();
    drop(full_tx);
    let sunk = sink
        .join()
        .map_err(|_| anyhow::anyhow!("the export writing thread panicked"))?;
    let (written, _file) = sunk?;
    let n = encoded?;
    if n != plan.rows {
        bail!(
            "batch {} was planned with {} records but {n} were read; were records deleted?",
            plan.name,
            plan.rows
        );
    }
    Ok(written)
}

fn reuse(mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    buf
}

/// Turns stored values into CSV (RFC 4180: header, CRLF, quotes only where needed) or NDJSON.
/// Values are written as stored: typed columns hold their canonical form already.
struct Encoder {
    format: Format,
    columns: Vec<String>,
    /// NDJSON: `"name":` per column, JSON-escaped once.
    keys: Vec<Vec<u8>>,
}

impl Encoder {
    fn new(format: Format, columns: &[String]) -> Encoder {
        let keys = columns
            .iter()
            .map(|c| {
                let mut k = serde_json::to_vec(c).expect("a string serializes");
                k.push(b':');
                k
            })
            .collect();
        Encoder {
            format,
            columns: columns.to_vec(),
            keys,
        }
    }

    fn header(&self, out: &mut Vec<u8>) {
        if self.format == Format::Csv {
            for (i, c) in self.columns.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                csv_text(out, c.as_bytes(), true);
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    fn value(&self, out: &mut Vec<u8>, i: usize, v: ValueRef<'_>) {
        match self.format {
            Format::Csv => {
                if i > 0 {
                    out.push(b',');
                }
                match v {
                    ValueRef::Null => {}
                    ValueRef::Integer(n) => push_int(out, n),
                    ValueRef::Real(f) => push_float(out, f),
                    ValueRef::Text(t) | ValueRef::Blob(t) => csv_text(out, t, false),
                }
            }
            Format::Ndjson => {
                out.push(if i == 0 { b'{' } else { b',' });
                out.extend_from_slice(&self.keys[i]);
                match v {
                    ValueRef::Null => out.extend_from_slice(b"null"),
                    ValueRef::Integer(n) => push_int(out, n),
                    ValueRef::Real(f) if f.is_finite() => push_float(out, f),
                    ValueRef::Real(_) => out.extend_from_slice(b"null"),
                    ValueRef::Text(t) | ValueRef::Blob(t) => json_text(out, t),
                }
            }
        }
    }

    fn end_row(&self, out: &mut Vec<u8>) {
        match self.format {
            Format::Csv => out.extend_from_slice(b"\r\n"),
            Format::Ndjson => {
                if self.columns.is_empty() {
                    out.push(b'{');
                }
                out.extend_from_slice(b"}\n");
            }
        }
    }
}

/// A CSV field: quoted when it holds a delimiter, quote or line break (or is empty, so an empty
/// string stays distinguishable from a missing value).
fn csv_text(out: &mut Vec<u8>, t: &[u8], header: bool) {
    let needs =
        t.is_empty() && !header || t.iter().any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if !needs {
        out.extend_from_slice(t);
        return;
    }
    out.push(b'"');
    let mut rest = t;
    while let Some(q) = memchr::memchr(b'"', rest) {
        out.extend_from_slice(&rest[..=q]);
        out.push(b'"');
        rest = &rest[q + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

fn json_text(out: &mut Vec<u8>, t: &[u8]) {
    let plain = t
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x80);
    if plain {
        out.push(b'"');
        out.extend_from_slice(t);
        out.push(b'"');
    } else {
        let s = String::from_utf8_lossy(t);
        serde_json::to_writer(&mut *out, s.as_ref()).expect("writing to a Vec cannot fail");
    }
}

fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

/// The shortest text that reads back as the same float; exponent form for very large or small
/// magnitudes.
fn push_float(out: &mut Vec<u8>, f: f64) {
    let a = f.abs();
    let s = if a != 0.0 && !(1e-5..1e16).contains(&a) {
        format!("{f:e}")
    } else {
        format!("{f}")
    };
    out.extend_from_slice(s.as_bytes());
}

/// Every export target of the spool, with its pending record count.
pub fn targets(conn: &Connection) -> Result<Vec<TargetStatus>> {
    let mut stmt = conn.prepare(
        "SELECT e.dataset, e.target, e.dir, e.watermark, e.batches, e.rows, e.exported_at,
                e.pending_name, d.table_name
         FROM exports e LEFT JOIN datasets d ON d.name = e.dataset
         ORDER BY e.dataset, e.target",
    )?;
    let rows: Vec<(TargetStatus, Option<String>)> = stmt
        .query_map([], |r| {
            Ok((
                TargetStatus {
                    dataset: r.get(0)?,
                    target: r.get(1)?,
                    dir: r.get(2)?,
                    watermark: r.get(3)?,
                    pending_records: 0,
                    batches: r.get::<_, i64>(4)? as u64,
                    exported_records: r.get::<_, i64>(5)? as u64,
                    last_export: r.get(6)?,
                    interrupted_batch: r.get(7)?,
                },
                r.get(8)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (mut t, table) in rows {
        if let Some(table) = table {
            t.pending_records = conn.query_row(
                &format!("SELECT count(*) FROM {} WHERE _id > ?1", ident(&table)),
                [t.watermark],
                |r| r.get::<_, i64>(0),
            )? as u64;
        }
        out.push(t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_field(t: &str) -> String {
        let mut v = Vec::new();
        csv_text(&mut v, t.as_bytes(), false);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn csv_quotes_only_where_rfc_4180_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\r\nlines"), "\"two\r\nlines\"");
        assert_eq!(csv_field(""), "\"\"");
        assert_eq!(csv_field(" spaced "), " spaced ");
    }

    #[test]
    fn numbers_read_back_as_the_same_value() {
        for n in [0i64, 7, -7, i64::MIN, i64::MAX, 1_000_000] {
            let mut v = Vec::new();
            push_int(&mut v, n);
            assert_eq!(String::from_utf8(v).unwrap(), n.to_string());
        }
        for f in [0.0f64, 0.1, -2.5, 1e300, 1.5e-9, 123456.789, 9.999e15, 1e16] {
            let mut v = Vec::new();
            push_float(&mut v, f);
            let s = String::from_utf8(v).unwrap();
            assert_eq!(s.parse::<f64>().unwrap(), f, "{s}");
            assert!(s.len() < 30, "{s}");
        }
    }

    #[test]
    fn ndjson_escapes_only_what_json_requires() {
        let enc = Encoder::new(Format::Ndjson, &["a".into(), "b \"q\"".into()]);
        let mut out = Vec::new();
        enc.value(&mut out, 0, ValueRef::Text(b"tab\there \xc3\xa9"));
        enc.value(&mut out, 1, ValueRef::Null);
        enc.end_row(&mut out);
        let line = String::from_utf8(out).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["a"], "tab\there é");
        assert!(v["b \"q\""].is_null());
    }

    #[test]
    fn batch_names_are_fixed_by_the_id_range() {
        assert_eq!(
            batch_name("vehicles", 1, 100_000, Format::Csv, false),
            "vehicles-000000000001-000000100000.csv"
        );
        assert_eq!(
            batch_name("a b/c", 5, 9, Format::Ndjson, true),
            "a_b_c-000000000005-000000000009.ndjson.gz"
        );
    }
}
