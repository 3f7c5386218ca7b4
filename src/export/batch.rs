//! A batch: the data file written where the target stages it (`outbox`), fsynced, then
//! published under its final name; then its manifest and done marker, each also complete under
//! its final name only. Encoding runs on the calling thread, hashing, compression and writes on a
//! second one, so the two overlap (Parquet: `parquet`, the same way a row group at a time). Reads records through the store, writes no state.

use super::encode::Encoder;
use super::outbox::Outbox;
use super::parquet::{self, Field};
use super::{BatchFormat, Request};
use crate::store::{BatchPlan, Store};
use anyhow::{bail, Context, Result};
use crossbeam_channel::bounded;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Encoded bytes handed to the file-writing thread at a time.
const BUFFER: usize = 1 << 20;

/// The data file as written.
pub struct Written {
    pub sha256: String,
    pub bytes: u64,
    /// Records in it: the plan's, less any replaced (`on_key = "update"`) since it was planned
    /// — their successors come in a later batch.
    pub rows: u64,
}

/// The manifest beside each batch. Field order is the file's order.
#[derive(Debug, Serialize)]
struct Manifest<'a> {
    dataset: &'a str,
    target: &'a str,
    file: &'a str,
    format: BatchFormat,
    compression: Option<&'static str>,
    /// Parquet batches: each column's Parquet type, ferry's own columns first.
    #[serde(skip_serializing_if = "Option::is_none")]
    parquet_schema: Option<&'a [Field]>,
    rows: u64,
    first_record_id: i64,
    last_record_id: i64,
    columns: &'a [String],
    sha256: &'a str,
    bytes: u64,
    created_at: &'a str,
    ferry_version: &'static str,
}

/// Writes the data file, its manifest and its done marker, each visible only when complete.
pub fn write_batch(
    store: &mut dyn Store,
    table: &str,
    req: &Request,
    plan: &BatchPlan,
    format: BatchFormat,
    out: &mut Outbox,
) -> Result<Written> {
    let staged = out.stage(&plan.name);
    // A copy staged for an upload is not fsynced: a crash writes it again.
    let to = (staged.as_path(), out.stages_in_place());
    let written = match format {
        BatchFormat::Parquet => {
            parquet::write(store, table, plan, (&req.declared, req.compression), to)
                .map(|(w, fields)| (w, Some(fields)))
        }
        _ => write_data(store, table, plan, format, to).map(|w| (w, None)),
    }
    .with_context(|| format!("writing {}", plan.name));
    let (written, schema) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = fs::remove_file(&staged);
            return Err(e);
        }
    };
    if written.rows != plan.rows {
        tracing::info!(
            file = %plan.name,
            planned = plan.rows,
            rows = written.rows,
            "records of the batch were replaced since it was planned; their successors follow"
        );
    }
    if let Err(e) = out.publish(&staged, &plan.name) {
        let _ = fs::remove_file(&staged);
        return Err(e);
    }
    crate::faults::export_die("data");

    let manifest = Manifest {
        dataset: &req.dataset,
        target: &req.target,
        file: &plan.name,
        format,
        compression: match format {
            BatchFormat::Parquet => req.compression.id(),
            _ => plan.gzip.then_some("gzip"),
        },
        parquet_schema: schema.as_deref(),
        rows: written.rows,
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
    out.publish_bytes(&format!("{}.manifest.json", plan.name), &json)?;
    // The done marker holds the data file's SHA-256 as `sha256sum` writes it (`sha256sum -c`
    // checks the batch); never empty, which some FTPS servers refuse to store.
    let done = format!("{}  {}\n", written.sha256, plan.name);
    out.publish_bytes(&format!("{}.done", plan.name), done.as_bytes())?;
    out.sync()?;
    Ok(written)
}

/// Counts and hashes what goes into the file.
pub(super) struct Hashing<W> {
    inner: W,
    sha: Sha256,
    bytes: u64,
}

impl<W> Hashing<W> {
    pub(super) fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            sha: Sha256::new(),
            bytes: 0,
        }
    }

    /// The SHA-256 (hex) and size of what went through.
    pub(super) fn digest(self) -> (String, u64) {
        (hex(self.sha), self.bytes)
    }
}

fn hex(sha: Sha256) -> String {
    sha.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Hashing<io::BufWriter<File>> {
    /// Flushes the file, and fsyncs it when it is to be `durable` where it is (not a copy
    /// staged for an upload, which a crash makes again); its SHA-256 and size (`rows` left to
    /// the caller).
    pub(super) fn sync(mut self, durable: bool) -> io::Result<Written> {
        self.flush()?;
        let file = self.inner.into_inner().map_err(|e| e.into_error())?;
        if durable {
            file.sync_all()?;
        }
        Ok(Written {
            sha256: hex(self.sha),
            bytes: self.bytes,
            rows: 0,
        })
    }
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

/// The second thread: takes full buffers, hashes, compresses (gzip with a fixed header, so the
/// same batch is the same bytes) and writes them, fsyncs, and hands buffers back for reuse.
fn sink(
    file: File,
    (gzip, durable): (bool, bool),
    full: crossbeam_channel::Receiver<Vec<u8>>,
    empty: crossbeam_channel::Sender<Vec<u8>>,
) -> io::Result<Written> {
    let hashing = Hashing::new(io::BufWriter::with_capacity(BUFFER, file));
    let reuse = |mut buf: Vec<u8>| {
        buf.clear();
        let _ = empty.send(buf);
    };
    let hashing = if gzip {
        // No name and mtime 0 in the gzip header: the same batch is the same bytes.
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(hashing, flate2::Compression::default());
        for buf in full {
            gz.write_all(&buf)?;
            reuse(buf);
        }
        gz.finish()?
    } else {
        let mut h = hashing;
        for buf in full {
            h.write_all(&buf)?;
            reuse(buf);
        }
        h
    };
    hashing.sync(durable)
}

/// Reads the batch's records and writes them to `tmp`, fsynced.
fn write_data(
    store: &mut dyn Store,
    table: &str,
    plan: &BatchPlan,
    format: BatchFormat,
    (tmp, durable): (&Path, bool),
) -> Result<Written> {
    let file = File::create(tmp)?;
    let (full_tx, full_rx) = bounded::<Vec<u8>>(2);
    let (empty_tx, empty_rx) = bounded::<Vec<u8>>(3);
    for _ in 0..3 {
        let _ = empty_tx.send(Vec::with_capacity(BUFFER + 64 * 1024));
    }
    let gzip = plan.gzip;
    let io_thread = std::thread::Builder::new()
        .name("ferry-export-io".into())
        .spawn(move || sink(file, (gzip, durable), full_rx, empty_tx))?;

    let enc = Encoder::new(format, &plan.columns);
    let mut buf = empty_rx.recv()?;
    enc.header(&mut buf);
    let mut sink_gone = false;
    let width = plan.columns.len();
    let encoded = store.read_batch(table, plan, &mut |record| {
        if sink_gone {
            return Ok(());
        }
        for i in 0..width {
            enc.value(&mut buf, i, record.value(i)?);
        }
        enc.end_row(&mut buf);
        if buf.len() >= BUFFER {
            let full = std::mem::take(&mut buf);
            if full_tx.send(full).is_err() {
                sink_gone = true; // the writing thread failed; its error is reported below
                return Ok(());
            }
            buf = empty_rx.recv()?;
        }
        Ok(())
    });
    let _ = full_tx.send(buf);
    drop(full_tx);
    let written = io_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the export writing thread panicked"))??;
    let n = encoded?;
    // Records replaced since the plan are gone from its range; none can have come into it.
    if n > plan.rows {
        bail!(
            "batch {} was planned with {} records but {n} were read; were records added by hand?",
            plan.name,
            plan.rows
        );
    }
    Ok(Written { rows: n, ..written })
}
