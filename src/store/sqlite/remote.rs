//! Remote sources in SQLite: `ferry_remote` (one claim per remote file and version) and the
//! ledger rows that name a remote file.

use crate::store::{now, RemoteKey, RemoteRow, RemoteState};
use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};

pub fn files(conn: &Connection, source: &str) -> Result<Vec<RemoteRow>> {
    let mut st = conn.prepare_cached(
        "SELECT path, version, state, owner, error FROM ferry_remote WHERE source = ?1",
    )?;
    let rows = st.query_map([source], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (path, version, state, owner, error) = row?;
        out.push(RemoteRow {
            key: RemoteKey {
                source: source.to_string(),
                path,
                version,
            },
            state: RemoteState::from_id(&state).context("an unknown remote file state")?,
            owner,
            error,
        });
    }
    Ok(out)
}

fn claim(conn: &Connection, key: &RemoteKey, owner: &str, dead: Option<&str>) -> Result<bool> {
    let t = now();
    let n = match dead {
        None => conn.execute(
            "INSERT INTO ferry_remote (source, path, version, state, owner, claimed_at, \
             changed_at) VALUES (?1, ?2, ?3, 'claimed', ?4, ?5, ?5) ON CONFLICT DO NOTHING",
            params![key.source, key.path, key.version, owner, t],
        )?,
        Some(dead) => conn.execute(
            "UPDATE ferry_remote SET owner = ?4, claimed_at = ?5, changed_at = ?5, \
             claims = claims + 1 WHERE source = ?1 AND path = ?2 AND version = ?3 \
             AND state = 'claimed' AND owner = ?6",
            params![key.source, key.path, key.version, owner, t, dead],
        )?,
    };
    Ok(n == 1)
}

pub fn release(conn: &Connection, key: &RemoteKey, owner: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM ferry_remote WHERE source = ?1 AND path = ?2 AND version = ?3 \
         AND state = 'claimed' AND owner = ?4",
        params![key.source, key.path, key.version, owner],
    )?;
    Ok(())
}

pub fn ledger(conn: &Connection, key: &RemoteKey) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT max(id) FROM files WHERE remote_source = ?1 AND remote_path = ?2 \
             AND remote_version = ?3",
            params![key.source, key.path, key.version],
            |r| r.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten())
}

pub fn mark(
    conn: &Connection,
    key: &RemoteKey,
    state: RemoteState,
    error: Option<&str>,
) -> Result<()> {
    conn.execute(
        "UPDATE ferry_remote SET state = ?4, owner = NULL, error = ?5, changed_at = ?6 \
         WHERE source = ?1 AND path = ?2 AND version = ?3",
        params![key.source, key.path, key.version, state.id(), error, now()],
    )?;
    Ok(())
}

pub fn claims(
    conn: &mut Connection,
    claims: &[(RemoteKey, Option<String>)],
    owner: &str,
) -> Result<Vec<bool>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(claims.len());
    for (key, dead) in claims {
        out.push(claim(&tx, key, owner, dead.as_deref())?);
    }
    tx.commit()?;
    Ok(out)
}

pub fn committed(
    conn: &mut Connection,
    keys: &[RemoteKey],
    state: RemoteState,
    owner: &str,
    release: bool,
) -> Result<Vec<bool>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let loaded = ledger(&tx, key)?.is_some();
        if loaded {
            mark(&tx, key, state, None)?;
        } else if release {
            self::release(&tx, key, owner)?;
        }
        out.push(loaded);
    }
    tx.commit()?;
    Ok(out)
}

pub fn forget(conn: &mut Connection, keys: &[RemoteKey]) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for key in keys {
        tx.execute(
            "DELETE FROM ferry_remote WHERE source = ?1 AND path = ?2 AND version = ?3 \
             AND state = 'finished'",
            params![key.source, key.path, key.version],
        )?;
    }
    tx.commit()?;
    Ok(())
}
