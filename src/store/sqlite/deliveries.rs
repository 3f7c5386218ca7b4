//! Deliveries in SQLite: `ferry_channels` (from when each channel owes notices) and
//! `ferry_deliveries` (one row per file a channel delivered or tried to). A file is owed by a
//! channel when it finished since the channel's `since`, is one the channel covers, and has no
//! delivered row.

use super::ledger::{file_row, FILE_COLUMNS};
use crate::store::{now, ChannelStatus, Covers, FileRow};
use anyhow::Result;
use rusqlite::{params, Connection, OptionalExtension};

/// The files a channel owes, as SQL over `files f` (parameters: ?1 channel, ?2 covered name).
fn owed(covers: &Covers) -> String {
    let cover = match covers {
        Covers::Dataset(_) => "f.dataset = ?2",
        Covers::Source(_) => "f.remote_source = ?2",
        Covers::All => "?2 IS NULL",
    };
    format!(
        "FROM files f JOIN ferry_channels c ON c.channel = ?1 \
         WHERE f.finished_at >= c.since AND {cover} \
           AND NOT EXISTS (SELECT 1 FROM ferry_deliveries d \
                           WHERE d.channel = ?1 AND d.file_id = f.id \
                             AND d.delivered_at IS NOT NULL)"
    )
}

fn covered(covers: &Covers) -> Option<&str> {
    match covers {
        Covers::Dataset(n) | Covers::Source(n) => Some(n),
        Covers::All => None,
    }
}

pub fn open(conn: &Connection, channel: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO ferry_channels (channel, since) VALUES (?1, ?2) \
         ON CONFLICT (channel) DO NOTHING",
        params![channel, now()],
    )?;
    Ok(())
}

pub fn due(
    conn: &Connection,
    channel: &str,
    covers: &Covers,
    at: &str,
    limit: u64,
) -> Result<Vec<(FileRow, u32)>> {
    let cols: Vec<String> = FILE_COLUMNS
        .split(',')
        .map(|c| format!("f.{}", c.trim()))
        .collect();
    let sql = format!(
        "SELECT {}, (SELECT attempts FROM ferry_deliveries a WHERE a.channel = ?1 \
           AND a.file_id = f.id) {} AND NOT EXISTS (SELECT 1 FROM ferry_deliveries d WHERE d.channel = ?1 \
           AND d.file_id = f.id AND d.retry_at > ?3) \
         ORDER BY f.id LIMIT ?4",
        cols.join(", "),
        owed(covers)
    );
    let mut st = conn.prepare_cached(&sql)?;
    let attempts = FILE_COLUMNS.split(',').count();
    let rows = st.query_map(params![channel, covered(covers), at, limit as i64], |r| {
        Ok((
            file_row(r)?,
            r.get::<_, Option<i64>>(attempts)?.unwrap_or(0) as u32,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn advance(conn: &Connection, channel: &str, covers: &Covers, horizon: &str) -> Result<()> {
    conn.execute(
        &format!(
            "UPDATE ferry_channels SET since = max(since, min(?3, \
               coalesce((SELECT min(f.finished_at) {}), ?3))) WHERE channel = ?1",
            owed(covers)
        ),
        params![channel, covered(covers), horizon],
    )?;
    Ok(())
}

pub fn name_taken(conn: &Connection, channel: &str, name: &str, file_id: i64) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM ferry_deliveries WHERE channel = ?1 AND name = ?2 AND file_id <> ?3 \
             AND delivered_at IS NOT NULL",
            params![channel, name, file_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

pub fn done(conn: &Connection, channel: &str, file_id: i64, name: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO ferry_deliveries (channel, file_id, name, attempts, delivered_at) \
         VALUES (?1, ?2, ?3, 1, ?4) \
         ON CONFLICT (channel, file_id) DO UPDATE SET name = excluded.name, \
           attempts = attempts + 1, delivered_at = excluded.delivered_at, error = NULL, \
           retry_at = NULL",
        params![channel, file_id, name, now()],
    )?;
    Ok(())
}

pub fn failed(
    conn: &Connection,
    channel: &str,
    file_id: i64,
    error: &str,
    retry_at: &str,
) -> Result<()> {
    conn.execute(
        "INSERT INTO ferry_deliveries (channel, file_id, attempts, error, retry_at) \
         VALUES (?1, ?2, 1, ?3, ?4) \
         ON CONFLICT (channel, file_id) DO UPDATE SET attempts = attempts + 1, \
           error = excluded.error, retry_at = excluded.retry_at",
        params![channel, file_id, error, retry_at],
    )?;
    Ok(())
}

pub fn channels(conn: &Connection, covers: &[(String, Covers)]) -> Result<Vec<ChannelStatus>> {
    let mut out = Vec::new();
    for (channel, cover) in covers {
        let open: Option<String> = conn
            .query_row(
                "SELECT since FROM ferry_channels WHERE channel = ?1",
                [channel],
                |r| r.get(0),
            )
            .optional()?;
        if open.is_none() {
            continue;
        }
        let owed: i64 = conn.query_row(
            &format!("SELECT count(*) {}", owed(cover)),
            params![channel, covered(cover)],
            |r| r.get(0),
        )?;
        let (delivered, failing): (i64, i64) = conn.query_row(
            "SELECT count(delivered_at), count(*) - count(delivered_at) FROM ferry_deliveries \
             WHERE channel = ?1",
            [channel],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let last_error: Option<String> = conn
            .query_row(
                "SELECT error FROM ferry_deliveries WHERE channel = ?1 \
                 AND delivered_at IS NULL AND error IS NOT NULL ORDER BY retry_at DESC LIMIT 1",
                [channel],
                |r| r.get(0),
            )
            .optional()?;
        out.push(ChannelStatus {
            channel: channel.clone(),
            delivered: delivered as u64,
            owed: owed as u64,
            failing: failing as u64,
            last_error,
        });
    }
    Ok(out)
}
