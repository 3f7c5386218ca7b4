//! Deliveries in PostgreSQL: `ferry_channels` (from when each channel owes notices) and
//! `ferry_deliveries` (one row per file a channel delivered or tried to), shared by every host. A
//! file is owed by a channel when it finished since the channel's `since`, is one the channel
//! covers, and has no delivered row. Two hosts delivering at once may both deliver a file (a receipt is then
//! written twice under the same name, the same bytes; a webhook called twice with the same
//! idempotency key): deliveries are at least once, and receipts exactly one file per name.

use super::ledger::{file_columns, file_row};
use crate::store::{now, ChannelStatus, Covers, FileRow};
use anyhow::Result;
use postgres::types::ToSql;
use postgres::Client;

/// The files a channel owes, as SQL over `files` ($1 channel, $2 covered name).
fn owed(covers: &Covers) -> String {
    let cover = match covers {
        Covers::Dataset(_) => "files.dataset = $2",
        Covers::Source(_) => "files.remote_source = $2",
        Covers::All => "$2::text IS NULL",
    };
    format!(
        "FROM files JOIN ferry_channels c ON c.channel = $1 \
         WHERE files.finished_at >= c.since AND {cover} \
           AND NOT EXISTS (SELECT 1 FROM ferry_deliveries d \
                           WHERE d.channel = $1 AND d.file_id = files.id \
                             AND d.delivered_at IS NOT NULL)"
    )
}

fn covered(covers: &Covers) -> Option<&str> {
    match covers {
        Covers::Dataset(n) | Covers::Source(n) => Some(n),
        Covers::All => None,
    }
}

pub fn open(c: &mut Client, channel: &str) -> Result<()> {
    c.execute(
        "INSERT INTO ferry_channels (channel, since) VALUES ($1, $2::text::timestamptz) \
         ON CONFLICT (channel) DO NOTHING",
        &[&channel, &now()],
    )?;
    Ok(())
}

pub fn due(
    c: &mut Client,
    channel: &str,
    covers: &Covers,
    at: &str,
    limit: u64,
) -> Result<Vec<(FileRow, u32)>> {
    // `files` unaliased: the ledger's column list reads it as the ledger does.
    let sql = format!(
        "SELECT {} {} AND NOT EXISTS (SELECT 1 FROM ferry_deliveries d WHERE d.channel = $1 \
           AND d.file_id = files.id AND d.retry_at > $3::text::timestamptz) \
         ORDER BY files.id LIMIT $4",
        file_columns(),
        owed(covers)
    );
    let name = covered(covers);
    let params: [&(dyn ToSql + Sync); 4] = [&channel, &name, &at, &(limit as i64)];
    let rows: Vec<FileRow> = c
        .query(&sql, &params)?
        .iter()
        .map(file_row)
        .collect::<Result<_>>()?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let attempts: std::collections::HashMap<i64, i64> = c
        .query(
            "SELECT file_id, attempts FROM ferry_deliveries WHERE channel = $1 \
             AND file_id = ANY($2)",
            &[&channel, &ids],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(rows
        .into_iter()
        .map(|r| {
            let n = attempts.get(&r.id).copied().unwrap_or(0) as u32;
            (r, n)
        })
        .collect())
}

pub fn advance(c: &mut Client, channel: &str, covers: &Covers, horizon: &str) -> Result<()> {
    let name = covered(covers);
    c.execute(
        &format!(
            "UPDATE ferry_channels SET since = GREATEST(since, LEAST($3::text::timestamptz, \
               COALESCE((SELECT min(files.finished_at) {}), $3::text::timestamptz))) \
             WHERE channel = $1",
            owed(covers)
        ),
        &[&channel, &name, &horizon],
    )?;
    Ok(())
}

pub fn name_taken(c: &mut Client, channel: &str, name: &str, file_id: i64) -> Result<bool> {
    Ok(!c
        .query(
            "SELECT 1 FROM ferry_deliveries WHERE channel = $1 AND name = $2 AND file_id <> $3 \
             AND delivered_at IS NOT NULL",
            &[&channel, &name, &file_id],
        )?
        .is_empty())
}

pub fn done(c: &mut Client, channel: &str, file_id: i64, name: &str) -> Result<()> {
    c.execute(
        "INSERT INTO ferry_deliveries (channel, file_id, name, attempts, delivered_at) \
         VALUES ($1, $2, $3, 1, now()) \
         ON CONFLICT (channel, file_id) DO UPDATE SET name = excluded.name, \
           attempts = ferry_deliveries.attempts + 1, delivered_at = excluded.delivered_at, \
           error = NULL, retry_at = NULL",
        &[&channel, &file_id, &name],
    )?;
    Ok(())
}

pub fn failed(
    c: &mut Client,
    channel: &str,
    file_id: i64,
    error: &str,
    retry_at: &str,
) -> Result<()> {
    c.execute(
        "INSERT INTO ferry_deliveries (channel, file_id, attempts, error, retry_at) \
         VALUES ($1, $2, 1, $3, $4::text::timestamptz) \
         ON CONFLICT (channel, file_id) DO UPDATE SET \
           attempts = ferry_deliveries.attempts + 1, error = excluded.error, \
           retry_at = excluded.retry_at",
        &[&channel, &file_id, &error, &retry_at],
    )?;
    Ok(())
}

pub fn channels(c: &mut Client, covers: &[(String, Covers)]) -> Result<Vec<ChannelStatus>> {
    let mut out = Vec::new();
    for (channel, cover) in covers {
        let open = c.query(
            "SELECT 1 FROM ferry_channels WHERE channel = $1",
            &[channel],
        )?;
        if open.is_empty() {
            continue;
        }
        let name = covered(cover);
        let owed: i64 = c
            .query_one(
                &format!("SELECT count(*) {}", owed(cover)),
                &[channel, &name],
            )?
            .get(0);
        let row = c.query_one(
            "SELECT count(delivered_at), count(*) - count(delivered_at) FROM ferry_deliveries \
             WHERE channel = $1",
            &[channel],
        )?;
        let (delivered, failing): (i64, i64) = (row.get(0), row.get(1));
        let last_error: Option<String> = c
            .query(
                "SELECT error FROM ferry_deliveries WHERE channel = $1 \
                 AND delivered_at IS NULL AND error IS NOT NULL ORDER BY retry_at DESC LIMIT 1",
                &[channel],
            )?
            .first()
            .map(|r| r.get(0));
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
