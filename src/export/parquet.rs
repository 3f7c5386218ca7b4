//! Parquet batches: the dataset's columns in Parquet's own types, written without Arrow from
//! column buffers filled a row group at a time.
//!
//! | ferry column | Parquet |
//! |---|---|
//! | `_id`, `_file_id`, `_line` (first, in that order) | `INT64` |
//! | `int` | `INT64` |
//! | `float` | `DOUBLE` |
//! | `decimal` | `FIXED_LEN_BYTE_ARRAY(16)` `DECIMAL(38, scale)` |
//! | `bool` | `BOOLEAN` |
//! | `date` | `INT32` `DATE` |
//! | `datetime` | `INT64` `TIMESTAMP(MICROS, UTC)`; `NANOS` for a batch's column that holds a value with digits below the microsecond |
//! | `string`, and every column of an undeclared dataset | `BYTE_ARRAY` `STRING` |
//!
//! Nothing is rounded, truncated or replaced on the way: a value its column cannot hold exactly
//! refuses the batch with the record's id and why (a decimal of more than 38 digits, or with more
//! fraction digits than the column's scale; a nanosecond datetime outside 1677–2262, which
//! `INT64` nanoseconds cannot hold; a leap second; text that is not UTF-8), and the batch stays
//! pending — export it as CSV, or fix the column. A decimal column declared with `scale` has
//! that scale in every batch; one declared without takes the batch's greatest (read from the
//! store first: one pass over that column), so downstream sees `12.5` as `12.500` in a batch
//! that also holds `0.125` — the same value.
//!
//! Reading from the store and filling the buffers run on the calling thread; encoding,
//! compressing, hashing and writing on a second one, a row group at a time (at most two in
//! memory: ~1 M rows or 64 MiB of values each). No state is written here.

use super::batch::{Hashing, Written};
use crate::store::{BatchPlan, Store, Value};
use crate::typed::ColType;
use anyhow::{anyhow, bail, Result};
use crossbeam_channel::bounded;
use parquet::basic::{
    Compression as Codec, LogicalType, Repetition, TimeUnit, Type as Physical, ZstdLevel,
};
use parquet::column::writer::{
    get_column_writer, get_typed_column_writer_mut, ColumnCloseResult, ColumnWriter,
};
use parquet::data_type::{
    BoolType, ByteArray, ByteArrayType, DoubleType, FixedLenByteArray, FixedLenByteArrayType,
    Int32Type, Int64Type,
};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::{SerializedFileWriter, SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;
use parquet::schema::types::Type;
use serde::Serialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

/// ferry's own columns, written first in every Parquet batch.
const SYSTEM: [&str; 3] = ["_id", "_file_id", "_line"];
/// The precision of every decimal column: the most a 16-byte decimal holds, and the most
/// DuckDB, Spark and Snowflake read.
const DECIMAL_DIGITS: u32 = 38;
/// Rows handed to the column encoders at a time.
const CHUNK: usize = 8192;
/// A row group ends at this many rows…
const GROUP_ROWS: usize = 1 << 20;
/// …or at this many bytes of values, whichever comes first.
const GROUP_BYTES: usize = 64 << 20;

/// The compression of Parquet pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Snappy,
    None,
}

impl Compression {
    /// As the manifest names it (`None`: uncompressed).
    pub fn id(self) -> Option<&'static str> {
        match self {
            Compression::Zstd => Some("zstd"),
            Compression::Snappy => Some("snappy"),
            Compression::None => None,
        }
    }

    fn codec(self) -> Codec {
        match self {
            // Level 1: Arrow's (pyarrow's, DuckDB's) default for Parquet.
            Compression::Zstd => Codec::ZSTD(ZstdLevel::try_new(1).expect("1 is a zstd level")),
            Compression::Snappy => Codec::SNAPPY,
            Compression::None => Codec::UNCOMPRESSED,
        }
    }
}

/// A column as the dataset declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    pub ty: ColType,
    pub scale: Option<u32>,
}

/// A Parquet column of the batch, for the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    pub name: String,
    /// Parquet's type: `INT64`, `DOUBLE`, `DECIMAL(38, 2)`, `TIMESTAMP(MICROS, UTC)`, …
    pub parquet_type: String,
    pub nullable: bool,
}

/// How a batch column is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
    Bool,
    Date,
    Timestamp { nanos: bool },
    Decimal { scale: u32 },
    Text,
}

impl Kind {
    fn of(d: Option<Declared>) -> Kind {
        match d.map(|d| (d.ty, d.scale)) {
            Some((ColType::Int, _)) => Kind::Int,
            Some((ColType::Float, _)) => Kind::Float,
            Some((ColType::Bool, _)) => Kind::Bool,
            Some((ColType::Date, _)) => Kind::Date,
            Some((ColType::DateTime, _)) => Kind::Timestamp { nanos: false },
            Some((ColType::Decimal, scale)) => Kind::Decimal {
                scale: scale.unwrap_or(0),
            },
            Some((ColType::String, _)) | None => Kind::Text,
        }
    }

    fn describe(self) -> String {
        match self {
            Kind::Int => "INT64".into(),
            Kind::Float => "DOUBLE".into(),
            Kind::Bool => "BOOLEAN".into(),
            Kind::Date => "DATE".into(),
            Kind::Timestamp { nanos: false } => "TIMESTAMP(MICROS, UTC)".into(),
            Kind::Timestamp { nanos: true } => "TIMESTAMP(NANOS, UTC)".into(),
            Kind::Decimal { scale } => format!("DECIMAL({DECIMAL_DIGITS}, {scale})"),
            Kind::Text => "STRING".into(),
        }
    }

    fn parquet(self, name: &str, required: bool) -> Result<Type> {
        let (physical, logical) = match self {
            Kind::Int => (Physical::INT64, None),
            Kind::Float => (Physical::DOUBLE, None),
            Kind::Bool => (Physical::BOOLEAN, None),
            Kind::Date => (Physical::INT32, Some(LogicalType::Date)),
            Kind::Timestamp { nanos } => (
                Physical::INT64,
                Some(LogicalType::Timestamp {
                    is_adjusted_to_u_t_c: true,
                    unit: if nanos {
                        TimeUnit::NANOS
                    } else {
                        TimeUnit::MICROS
                    },
                }),
            ),
            Kind::Decimal { scale } => (
                Physical::FIXED_LEN_BYTE_ARRAY,
                Some(LogicalType::Decimal {
                    scale: scale as i32,
                    precision: DECIMAL_DIGITS as i32,
                }),
            ),
            Kind::Text => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
        };
        let mut b = Type::primitive_type_builder(name, physical)
            .with_repetition(if required {
                Repetition::REQUIRED
            } else {
                Repetition::OPTIONAL
            })
            .with_logical_type(logical);
        if let Kind::Decimal { scale } = self {
            b = b
                .with_length(16)
                .with_precision(DECIMAL_DIGITS as i32)
                .with_scale(scale as i32);
        }
        Ok(b.build()?)
    }
}

/// Why a value was not taken.
enum Bad {
    /// The column needs nanoseconds for this batch: write it again so.
    Nanos,
    Why(String),
}

/// The batch's columns: names, kinds, and whether each may be null.
struct Layout {
    names: Vec<String>,
    kinds: Vec<Kind>,
}

impl Layout {
    fn required(&self, i: usize) -> bool {
        i == 0
    }

    fn schema(&self) -> Result<Type> {
        let fields = self
            .names
            .iter()
            .zip(&self.kinds)
            .enumerate()
            .map(|(i, (n, k))| k.parquet(n, self.required(i)).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Type::group_type_builder("schema")
            .with_fields(fields)
            .build()?)
    }

    fn fields(&self) -> Vec<Field> {
        self.names
            .iter()
            .zip(&self.kinds)
            .enumerate()
            .map(|(i, (n, k))| Field {
                name: n.clone(),
                parquet_type: k.describe(),
                nullable: !self.required(i),
            })
            .collect()
    }
}

/// What each of the batch's columns is declared as: the declared column of exactly its name, or
/// of its name in another case (a table adopted with `AMOUNT` for a declared `amount`) when no
/// other column of the batch has that name in any case — two columns differing only in case
/// never both take one declaration; the one that is not it stays text.
fn declarations(columns: &[String], declared: &HashMap<String, Declared>) -> Vec<Option<Declared>> {
    columns
        .iter()
        .map(|n| {
            declared.get(n).copied().or_else(|| {
                let lower = n.to_lowercase();
                let alone = columns.iter().filter(|m| m.to_lowercase() == lower).count() == 1;
                let mut by_case = declared.iter().filter(|(k, _)| k.to_lowercase() == lower);
                match (alone, by_case.next(), by_case.next()) {
                    (true, Some((_, d)), None) => Some(*d),
                    _ => None,
                }
            })
        })
        .collect()
}

/// Writes the batch's records to `tmp` as Parquet, fsynced. `declared`: the dataset's declared
/// columns by name.
pub fn write(
    store: &mut dyn Store,
    table: &str,
    plan: &BatchPlan,
    (declared, compression): (&HashMap<String, Declared>, Compression),
    to: (&Path, bool),
) -> Result<(Written, Vec<Field>)> {
    let mut names: Vec<String> = SYSTEM.iter().map(|s| s.to_string()).collect();
    names.extend(plan.columns.iter().cloned());
    let decl: Vec<Option<Declared>> = [None; SYSTEM.len()]
        .into_iter()
        .chain(declarations(&plan.columns, declared))
        .collect();
    let mut kinds: Vec<Kind> = decl
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if i < SYSTEM.len() {
                Kind::Int
            } else {
                Kind::of(*d)
            }
        })
        .collect();
    // Decimals declared without a scale: the batch's greatest.
    let unscaled: Vec<usize> = (SYSTEM.len()..names.len())
        .filter(|&i| matches!(decl[i], Some(d) if d.ty == ColType::Decimal && d.scale.is_none()))
        .collect();
    if !unscaled.is_empty() {
        for (i, scale) in unscaled
            .iter()
            .zip(scales(store, table, plan, &names, &unscaled)?)
        {
            kinds[*i] = Kind::Decimal { scale };
        }
    }
    let mut layout = Layout { names, kinds };
    loop {
        match attempt(store, table, plan, &layout, compression, to)? {
            Ok(written) => {
                let fields = layout.fields();
                return Ok((written, fields));
            }
            // Each retry turns one more column to nanoseconds: at most one per column.
            Err(i) => layout.kinds[i] = Kind::Timestamp { nanos: true },
        }
    }
}

/// The greatest number of fraction digits in each of `cols` over the batch's records.
fn scales(
    store: &mut dyn Store,
    table: &str,
    plan: &BatchPlan,
    names: &[String],
    cols: &[usize],
) -> Result<Vec<u32>> {
    let read = BatchPlan {
        columns: cols.iter().map(|&i| names[i].clone()).collect(),
        ..plan.clone()
    };
    let mut scales = vec![0u32; cols.len()];
    store.read_batch(table, &read, &mut |record| {
        for (j, s) in scales.iter_mut().enumerate() {
            if let Value::Text(t) = record.value(j)? {
                let frac = memchr::memchr(b'.', t).map_or(0, |p| t.len() - p - 1);
                *s = (*s).max(frac as u32);
            }
        }
        Ok(())
    })?;
    Ok(scales)
}

/// What the reading thread sends a column's encoder.
enum Msg {
    /// The column's values of the next rows.
    Values(Col),
    /// The row group is over: close the column chunk and hand it back.
    EndGroup,
}

/// A column chunk encoded in memory, with what its writer reported on closing.
type Encoded = Result<(Vec<u8>, ColumnCloseResult)>;

/// One try at the file: `Ok(Err(column))` when a datetime column turned out to need
/// nanoseconds (the file is to be written again with it so).
///
/// The calling thread reads the records, converts them into column buffers and hands the
/// buffers, `CHUNK` rows at a time, to one encoder thread per column, which encodes and
/// compresses its column chunk in memory while the next rows are read. At a row group's end
/// the chunks are appended to the file in column order (`append_column`), hashed as written.
fn attempt(
    store: &mut dyn Store,
    table: &str,
    plan: &BatchPlan,
    layout: &Layout,
    compression: Compression,
    (tmp, durable): (&Path, bool),
) -> Result<std::result::Result<Written, usize>> {
    let file = File::create(tmp)?;
    let schema = Arc::new(layout.schema()?);
    let builder = || {
        WriterProperties::builder()
            .set_compression(compression.codec())
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_created_by(format!("ferry {}", env!("CARGO_PKG_VERSION")))
    };
    let props = Arc::new(builder().build());
    let plain = Arc::new(builder().set_dictionary_enabled(false).build());
    let out = Hashing::new(BufWriter::with_capacity(1 << 20, file));
    let mut w = SerializedFileWriter::new(out, schema, props.clone())?;
    let descrs = w.schema_descr().columns().to_vec();
    let read = BatchPlan {
        columns: layout.names.clone(),
        ..plan.clone()
    };
    std::thread::scope(|scope| {
        let mut to = Vec::with_capacity(descrs.len());
        let mut back = Vec::with_capacity(descrs.len());
        for (i, descr) in descrs.iter().enumerate() {
            let (tx, rx) = bounded::<Msg>(4);
            let (done_tx, done_rx) = bounded::<Encoded>(1);
            let (descr, props) = (descr.clone(), [plain.clone(), props.clone()]);
            std::thread::Builder::new()
                .name(format!("ferry-parquet-{i}"))
                .spawn_scoped(scope, move || encoder(descr, props, i > 0, rx, done_tx))?;
            to.push(tx);
            back.push(done_rx);
        }
        let mut chunk = Group::new(&layout.kinds);
        let (mut group_rows, mut group_bytes, mut rows) = (0usize, 0usize, 0u64);
        let mut nanos = None;
        let mut failed: Option<anyhow::Error> = None;
        let n = store.read_batch(table, &read, &mut |record| {
            if nanos.is_some() || failed.is_some() {
                return Ok(());
            }
            for (i, col) in chunk.cols.iter_mut().enumerate() {
                let v = record.value(i)?;
                match col.push(layout.kinds[i], layout.required(i), v) {
                    Ok(bytes) => group_bytes += bytes,
                    Err(Bad::Nanos) => {
                        nanos = Some(i);
                        return Ok(());
                    }
                    Err(Bad::Why(why)) => {
                        let id = match record.value(0)? {
                            Value::Int(id) => id.to_string(),
                            _ => "?".into(),
                        };
                        bail!(
                            "record {id}, column {}: {why}; Parquet cannot hold it exactly \
                             (export this dataset as csv or ndjson, or correct the value)",
                            layout.names[i]
                        );
                    }
                }
            }
            chunk.rows += 1;
            group_rows += 1;
            rows += 1;
            let end = group_rows >= GROUP_ROWS || group_bytes >= GROUP_BYTES;
            if chunk.rows >= CHUNK || end {
                let next = chunk.like();
                let full = std::mem::replace(&mut chunk, next);
                if let Err(e) = send(&to, full) {
                    failed = Some(e);
                }
            }
            if end && failed.is_none() {
                if let Err(e) = end_group(&mut w, &to, &back) {
                    failed = Some(e);
                }
                (group_rows, group_bytes) = (0, 0);
            }
            Ok(())
        });
        if n.is_ok() && nanos.is_none() && failed.is_none() && group_rows > 0 {
            let last = send(&to, chunk).and_then(|()| end_group(&mut w, &to, &back));
            if let Err(e) = last {
                failed = Some(e);
            }
        }
        // The encoders end when their channels close.
        drop(to);
        let n = n?;
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some(i) = nanos {
            return Ok(Err(i));
        }
        debug_assert_eq!(n, rows);
        let written = w.into_inner()?.sync(durable)?;
        Ok(Ok(Written { rows, ..written }))
    })
}

/// Hands each column's buffer to its encoder.
fn send(to: &[crossbeam_channel::Sender<Msg>], chunk: Group) -> Result<()> {
    if chunk.rows == 0 {
        return Ok(());
    }
    for (tx, col) in to.iter().zip(chunk.cols) {
        tx.send(Msg::Values(col))
            .map_err(|_| anyhow!("a Parquet column encoder stopped"))?;
    }
    Ok(())
}

/// Ends the row group: every column chunk closed, then appended to the file in column order.
fn end_group<W: Write + Send>(
    w: &mut SerializedFileWriter<W>,
    to: &[crossbeam_channel::Sender<Msg>],
    back: &[crossbeam_channel::Receiver<Encoded>],
) -> Result<()> {
    for tx in to {
        tx.send(Msg::EndGroup)
            .map_err(|_| anyhow!("a Parquet column encoder stopped"))?;
    }
    let mut rg = w.next_row_group()?;
    for rx in back {
        let (bytes, close) = rx
            .recv()
            .map_err(|_| anyhow!("a Parquet column encoder stopped"))??;
        rg.append_column(&bytes::Bytes::from(bytes), close)?;
    }
    rg.close()?;
    Ok(())
}

/// One column's encoder: a column chunk per row group, encoded and compressed in memory from
/// the buffers it is sent, handed back at the group's end. Ends when its channel closes.
fn encoder(
    descr: ColumnDescPtr,
    props: [Arc<WriterProperties>; 2],
    nullable: bool,
    values: crossbeam_channel::Receiver<Msg>,
    done: crossbeam_channel::Sender<Encoded>,
) {
    // The reading thread is the one the others wait for: encoders run at the lowest priority,
    // so it keeps a core while they take what is left (and yield to loading on the same host).
    // SAFETY: setpriority on this thread's own id.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
    // Dictionary encoding or not, decided on the file's first buffer: a column of mostly
    // distinct values (ids, names, free text) would only fill a dictionary and fall back.
    let mut dictionary: Option<bool> = None;
    let mut first = values.recv().ok();
    loop {
        let mut sink = TrackedWrite::new(Vec::new());
        let closed = {
            let Some(msg) = first.take().or_else(|| values.recv().ok()) else {
                return;
            };
            if let Msg::Values(col) = &msg {
                dictionary.get_or_insert_with(|| col.repeats());
            }
            let props = props[usize::from(dictionary.unwrap_or(true))].clone();
            let pages = SerializedPageWriter::new(&mut sink);
            let mut cw = get_column_writer(descr.clone(), props, Box::new(pages));
            let mut result = Ok(());
            let mut msg = Some(msg);
            loop {
                match msg.take().or_else(|| values.recv().ok()) {
                    Some(Msg::Values(col)) => {
                        if result.is_ok() {
                            result = col.write(&mut cw, nullable);
                        }
                    }
                    Some(Msg::EndGroup) => break,
                    // The batch is over (or was given up): nothing more to hand back.
                    None => return,
                }
            }
            result.and_then(|()| Ok(cw.close()?))
        };
        let encoded = closed.and_then(|close| Ok((sink.into_inner()?, close)));
        let failed = encoded.is_err();
        if done.send(encoded).is_err() || failed {
            return;
        }
    }
}

/// A row group's values, column by column.
struct Group {
    cols: Vec<Col>,
    rows: usize,
}

impl Group {
    fn new(kinds: &[Kind]) -> Group {
        Group {
            cols: kinds.iter().map(|&k| Col::new(k)).collect(),
            rows: 0,
        }
    }

    /// An empty group with room for as much as this one holds (no growing while filled).
    fn like(&self) -> Group {
        Group {
            cols: self.cols.iter().map(Col::like).collect(),
            rows: 0,
        }
    }
}

impl Col {
    /// Writes the buffered values into the column's writer.
    fn write(self, cw: &mut ColumnWriter<'_>, nullable: bool) -> Result<()> {
        // ferry's `_id` is required: no definition levels.
        let defs = nullable.then_some(self.defs.as_slice());
        match self.data {
            Data::I64(v) => {
                get_typed_column_writer_mut::<Int64Type>(cw).write_batch(&v, defs, None)?;
            }
            Data::I32(v) => {
                get_typed_column_writer_mut::<Int32Type>(cw).write_batch(&v, defs, None)?;
            }
            Data::F64(v) => {
                get_typed_column_writer_mut::<DoubleType>(cw).write_batch(&v, defs, None)?;
            }
            Data::Bool(v) => {
                get_typed_column_writer_mut::<BoolType>(cw).write_batch(&v, defs, None)?;
            }
            Data::Bytes { data, ends } => {
                let vals: Vec<ByteArray> = slices(data, &ends).map(ByteArray::from).collect();
                get_typed_column_writer_mut::<ByteArrayType>(cw).write_batch(&vals, defs, None)?;
            }
            Data::Fixed(data) => {
                let ends: Vec<usize> = (1..=data.len() / 16).map(|k| k * 16).collect();
                let vals: Vec<FixedLenByteArray> = slices(data, &ends)
                    .map(|b| FixedLenByteArray::from(ByteArray::from(b)))
                    .collect();
                get_typed_column_writer_mut::<FixedLenByteArrayType>(cw)
                    .write_batch(&vals, defs, None)?;
            }
        }
        Ok(())
    }
}

/// The values of one buffer, cut at `ends`, sharing it.
fn slices(data: Vec<u8>, ends: &[usize]) -> impl Iterator<Item = bytes::Bytes> + '_ {
    let data = bytes::Bytes::from(data);
    let mut start = 0;
    ends.iter().map(move |&e| {
        let b = data.slice(start..e);
        start = e;
        b
    })
}

/// One column of a row group: definition levels (1: a value, 0: null) and the values.
struct Col {
    defs: Vec<i16>,
    data: Data,
}

enum Data {
    I64(Vec<i64>),
    I32(Vec<i32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    /// 16-byte big-endian two's-complement decimals, back to back.
    Fixed(Vec<u8>),
    /// UTF-8 values back to back, and where each ends.
    Bytes {
        data: Vec<u8>,
        ends: Vec<usize>,
    },
}

impl Col {
    fn new(kind: Kind) -> Col {
        let data = match kind {
            Kind::Int | Kind::Timestamp { .. } => Data::I64(Vec::new()),
            Kind::Date => Data::I32(Vec::new()),
            Kind::Float => Data::F64(Vec::new()),
            Kind::Bool => Data::Bool(Vec::new()),
            Kind::Decimal { .. } => Data::Fixed(Vec::new()),
            Kind::Text => Data::Bytes {
                data: Vec::new(),
                ends: Vec::new(),
            },
        };
        Col {
            defs: Vec::new(),
            data,
        }
    }

    /// An empty column with room for as much as this one holds.
    fn like(&self) -> Col {
        let data = match &self.data {
            Data::I64(v) => Data::I64(Vec::with_capacity(v.len())),
            Data::I32(v) => Data::I32(Vec::with_capacity(v.len())),
            Data::F64(v) => Data::F64(Vec::with_capacity(v.len())),
            Data::Bool(v) => Data::Bool(Vec::with_capacity(v.len())),
            Data::Fixed(v) => Data::Fixed(Vec::with_capacity(v.len())),
            Data::Bytes { data, ends } => Data::Bytes {
                data: Vec::with_capacity(data.len() + data.len() / 8),
                ends: Vec::with_capacity(ends.len()),
            },
        };
        Col {
            defs: Vec::with_capacity(self.defs.len()),
            data,
        }
    }

    /// Whether values repeat enough for a dictionary to pay: at most half of them distinct.
    fn repeats(&self) -> bool {
        fn few<T: std::hash::Hash + Eq>(it: impl Iterator<Item = T>, n: usize) -> bool {
            let mut seen = std::collections::HashSet::with_capacity(n / 2 + 1);
            for v in it {
                seen.insert(v);
                if seen.len() > n / 2 {
                    return false;
                }
            }
            true
        }
        match &self.data {
            Data::I64(v) => few(v.iter(), v.len()),
            Data::I32(v) => few(v.iter(), v.len()),
            Data::F64(v) => few(v.iter().map(|f| f.to_bits()), v.len()),
            Data::Bool(_) => true,
            Data::Fixed(v) => few(v.chunks(16), v.len() / 16),
            Data::Bytes { data, ends } => {
                let mut start = 0;
                let slices = ends.iter().map(|&e| {
                    let s = &data[start..e];
                    start = e;
                    s
                });
                few(slices, ends.len())
            }
        }
    }

    /// Adds a value; returns the bytes it takes in the buffers.
    fn push(&mut self, kind: Kind, required: bool, v: Value<'_>) -> Result<usize, Bad> {
        if v == Value::Null {
            if required {
                return Err(Bad::Why("is null".into()));
            }
            self.defs.push(0);
            return Ok(2);
        }
        self.defs.push(1);
        let shown = || show(v);
        let wrong = |what: &str| Bad::Why(format!("{} is not {what}", shown()));
        match (&mut self.data, kind) {
            (Data::I64(out), Kind::Int) => match v {
                Value::Int(n) => out.push(n),
                _ => return Err(wrong("an integer")),
            },
            (Data::F64(out), Kind::Float) => match v {
                Value::Real(f) => out.push(f),
                // An integer in a float column (SQLite may keep one so): only if exact.
                Value::Int(n) if (n as f64) as i64 == n && n.unsigned_abs() <= 1 << 53 => {
                    out.push(n as f64)
                }
                _ => return Err(wrong("a float that a double holds exactly")),
            },
            (Data::Bool(out), Kind::Bool) => match v {
                Value::Int(0) => out.push(false),
                Value::Int(1) => out.push(true),
                _ => return Err(wrong("a boolean (1 or 0)")),
            },
            (Data::I32(out), Kind::Date) => match v {
                Value::Text(t) => out.push(days(t).ok_or_else(|| wrong("a date"))?),
                _ => return Err(wrong("a date")),
            },
            (Data::I64(out), Kind::Timestamp { nanos }) => match v {
                Value::Text(t) => out.push(timestamp(t, nanos)?),
                _ => return Err(wrong("a datetime")),
            },
            (Data::Fixed(out), Kind::Decimal { scale }) => match v {
                Value::Text(t) => {
                    out.extend_from_slice(&decimal(t, scale)?.to_be_bytes());
                    return Ok(18);
                }
                _ => return Err(wrong("a decimal")),
            },
            (Data::Bytes { data, ends }, Kind::Text) => {
                let before = data.len();
                match v {
                    Value::Text(t) => {
                        if std::str::from_utf8(t).is_err() {
                            return Err(Bad::Why("is not UTF-8 text".into()));
                        }
                        data.extend_from_slice(t);
                    }
                    // Stored as a number where text was expected: its exact text, as CSV has it.
                    Value::Int(_) | Value::Real(_) => data.extend_from_slice(shown().as_bytes()),
                    Value::Null => unreachable!("nulls are handled above"),
                }
                ends.push(data.len());
                return Ok(data.len() - before + 10);
            }
            _ => unreachable!("a column's buffer is made for its kind"),
        }
        Ok(10)
    }
}

/// A value as an error message shows it.
fn show(v: Value<'_>) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Int(n) => n.to_string(),
        Value::Real(f) => {
            let mut out = Vec::new();
            super::encode::push_float(&mut out, f);
            String::from_utf8(out).expect("ASCII")
        }
        Value::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
    }
}

/// Days since 1970-01-01 of a canonical date (`YYYY-MM-DD`, or a signed year beyond 9999).
fn days(t: &[u8]) -> Option<i32> {
    use chrono::{Datelike, NaiveDate};
    let d = match ymd(t) {
        Some(d) if t.len() == 10 => d,
        _ => NaiveDate::parse_from_str(std::str::from_utf8(t).ok()?, "%Y-%m-%d").ok()?,
    };
    Some(d.num_days_from_ce() - 719_163)
}

/// `YYYY-MM-DD` at the start of `t` (four-digit years: the canonical form of every year from
/// 0 to 9999), if it is one and a real date.
fn ymd(t: &[u8]) -> Option<chrono::NaiveDate> {
    if t.len() < 10 || t[4] != b'-' || t[7] != b'-' {
        return None;
    }
    let y = digits(&t[..4])?;
    let m = digits(&t[5..7])?;
    let d = digits(&t[8..10])?;
    chrono::NaiveDate::from_ymd_opt(y as i32, m, d)
}

fn digits(t: &[u8]) -> Option<u32> {
    t.iter().try_fold(0u32, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
    })
}

/// Seconds since the epoch and nanoseconds of the canonical UTC datetime
/// `YYYY-MM-DDTHH:MM:SS[.f…]Z` (up to nine fraction digits), if `t` is exactly that; a leap
/// second is not (the general parser says why).
fn canonical_utc(t: &[u8]) -> Option<(i64, u32)> {
    let date = ymd(t)?;
    if t.len() < 20 || t[10] != b'T' || t[13] != b':' || t[16] != b':' || t.last() != Some(&b'Z') {
        return None;
    }
    let (h, mi, sec) = (
        digits(&t[11..13])?,
        digits(&t[14..16])?,
        digits(&t[17..19])?,
    );
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let frac = &t[19..t.len() - 1];
    let nanos = match frac.split_first() {
        None => 0,
        Some((b'.', f)) if (1..=9).contains(&f.len()) => digits(f)? * 10u32.pow(9 - f.len() as u32),
        _ => return None,
    };
    let days = i64::from(chrono::Datelike::num_days_from_ce(&date)) - 719_163;
    Some((days * 86_400 + i64::from(h * 3600 + mi * 60 + sec), nanos))
}

/// Microseconds (or nanoseconds) since the epoch of a canonical UTC datetime.
fn timestamp(t: &[u8], nanos: bool) -> Result<i64, Bad> {
    if let Some((secs, sub)) = canonical_utc(t) {
        if nanos {
            return secs
                .checked_mul(1_000_000_000)
                .and_then(|n| n.checked_add(i64::from(sub)))
                .ok_or_else(|| {
                    Bad::Why(format!(
                        "{:?} needs nanoseconds, and Parquet's nanosecond timestamps hold only \
                         1677 to 2262",
                        String::from_utf8_lossy(t)
                    ))
                });
        }
        if sub % 1000 != 0 {
            return Err(Bad::Nanos);
        }
        return Ok(secs * 1_000_000 + i64::from(sub / 1000));
    }
    let s = std::str::from_utf8(t).map_err(|_| Bad::Why("is not a datetime".into()))?;
    let dt = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|_| Bad::Why(format!("{s:?} is not a datetime")))?
        .to_utc();
    let sub = dt.timestamp_subsec_nanos();
    if sub >= 1_000_000_000 {
        return Err(Bad::Why(format!(
            "{s:?} is a leap second, which Parquet timestamps cannot hold"
        )));
    }
    if nanos {
        return dt.timestamp_nanos_opt().ok_or_else(|| {
            Bad::Why(format!(
                "{s:?} needs nanoseconds, and Parquet's nanosecond timestamps hold only 1677 to \
                 2262"
            ))
        });
    }
    if sub % 1000 != 0 {
        return Err(Bad::Nanos);
    }
    Ok(dt.timestamp_micros())
}

/// The unscaled value of a canonical decimal at `scale`, if it fits 38 digits without losing
/// any.
fn decimal(t: &[u8], scale: u32) -> Result<i128, Bad> {
    let bad = |why: &str| Bad::Why(format!("{:?} {why}", String::from_utf8_lossy(t)));
    let (neg, body) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = match memchr::memchr(b'.', body) {
        Some(p) => (&body[..p], &body[p + 1..]),
        None => (body, &[][..]),
    };
    let digits = |p: &[u8]| p.iter().all(u8::is_ascii_digit);
    if int.is_empty() || !digits(int) || !digits(frac) {
        return Err(bad("is not a decimal"));
    }
    if frac.len() > scale as usize {
        return Err(bad(&format!(
            "has {} digits after the point, more than the column's scale of {scale}",
            frac.len()
        )));
    }
    let int = &int[int.iter().take_while(|&&b| b == b'0').count()..];
    if int.len() + scale as usize > DECIMAL_DIGITS as usize {
        return Err(bad(&format!(
            "needs more than {DECIMAL_DIGITS} digits at scale {scale}"
        )));
    }
    let mut v: i128 = 0;
    for &b in int.iter().chain(frac) {
        v = v * 10 + (b - b'0') as i128;
    }
    for _ in frac.len()..scale as usize {
        v *= 10;
    }
    Ok(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(r: Result<impl std::fmt::Debug, Bad>) -> String {
        match r {
            Err(Bad::Why(w)) => w,
            Err(Bad::Nanos) => "nanos".into(),
            Ok(v) => panic!("accepted: {v:?}"),
        }
    }

    #[test]
    fn a_declaration_goes_to_one_column_only() {
        let d = |ty| Declared { ty, scale: None };
        let declared: HashMap<String, Declared> = [
            ("amount".to_string(), d(ColType::Decimal)),
            ("day".to_string(), d(ColType::Date)),
        ]
        .into();
        let cols = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Exact names; another case when it is the only one; two cases: the exact one only.
        assert_eq!(
            declarations(&cols(&["amount", "DAY", "note"]), &declared),
            [Some(d(ColType::Decimal)), Some(d(ColType::Date)), None]
        );
        assert_eq!(
            declarations(&cols(&["Amount", "amount"]), &declared),
            [None, Some(d(ColType::Decimal))]
        );
        assert_eq!(
            declarations(&cols(&["Day", "DAY"]), &declared),
            [None, None]
        );
    }

    #[test]
    fn decimals_are_scaled_exactly_or_refused() {
        assert_eq!(decimal(b"12.50", 2).ok(), Some(1250));
        assert_eq!(decimal(b"-0.5", 3).ok(), Some(-500));
        assert_eq!(decimal(b"7", 2).ok(), Some(700));
        assert_eq!(decimal(b"0", 0).ok(), Some(0));
        let max = "9".repeat(38);
        assert_eq!(decimal(max.as_bytes(), 0).ok(), Some(max.parse().unwrap()));
        assert!(why(decimal(format!("1{max}").as_bytes(), 0)).contains("38 digits"));
        assert!(why(decimal(b"1.234", 2)).contains("scale of 2"));
        assert!(why(decimal(b"1e5", 2)).contains("not a decimal"));
        assert!(why(decimal(b"NaN", 2)).contains("not a decimal"));
    }

    #[test]
    fn datetimes_keep_every_digit_or_ask_for_nanoseconds() {
        let t = |s: &str, n| timestamp(s.as_bytes(), n);
        assert_eq!(
            t("1970-01-01T00:00:01.000002Z", false).ok(),
            Some(1_000_002)
        );
        assert_eq!(t("1969-12-31T23:59:59Z", false).ok(), Some(-1_000_000));
        assert_eq!(why(t("2026-01-01T00:00:00.123456789Z", false)), "nanos");
        assert_eq!(
            t("1970-01-01T00:00:00.000000001Z", true).ok(),
            Some(1),
            "nanoseconds kept"
        );
        assert!(why(t("2300-01-01T00:00:00.000000001Z", true)).contains("1677 to 2262"));
        assert!(why(t("2016-12-31T23:59:60Z", false)).contains("leap second"));
        // The fast path and the general parser agree.
        for s in [
            "2026-03-01T10:00:00.123456Z",
            "1969-12-31T23:59:59.999999Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
            "2000-02-29T12:00:00.5Z",
        ] {
            let dt = chrono::DateTime::parse_from_rfc3339(s).unwrap();
            assert_eq!(t(s, false).ok(), Some(dt.timestamp_micros()), "{s}");
            assert!(canonical_utc(s.as_bytes()).is_some(), "{s}");
        }
        assert!(canonical_utc(b"2026-02-30T00:00:00Z").is_none());
        assert!(canonical_utc(b"2026-01-01T24:00:00Z").is_none());
        assert!(canonical_utc(b"2026-01-01T00:00:00.Z").is_none());
    }

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(days(b"1970-01-01"), Some(0));
        assert_eq!(days(b"1969-12-31"), Some(-1));
        assert_eq!(days(b"2000-03-01"), Some(11_017));
        assert_eq!(days(b"2000-02-30"), None);
    }
}
