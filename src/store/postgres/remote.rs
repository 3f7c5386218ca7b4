//! Remote sources in PostgreSQL: `ferry_remote` (one claim per remote file and version, shared
//! by every host) and the ledger rows that name a remote file.

use crate::store::{now, RemoteKey, RemoteRow, RemoteState};
use anyhow::{Context, Result};
use postgres::{Client, GenericClient};

pub fn files(c: &mut Client, source: &str) -> Result<Vec<RemoteRow>> {
    let mut out = Vec::new();
    for r in c.query(
        "SELECT path, version, state, owner, error FROM ferry_remote WHERE source = $1",
        &[&source],
    )? {
        let state: String = r.get(2);
        out.push(RemoteRow {
            key: RemoteKey {
                source: source.to_string(),
                path: r.get(0),
                version: r.get(1),
            },
            state: RemoteState::from_id(&state).context("an unknown remote file state")?,
            owner: r.get(3),
            error: r.get(4),
        });
    }
    Ok(out)
}

fn claim(
    c: &mut impl GenericClient,
    key: &RemoteKey,
    owner: &str,
    dead: Option<&str>,
) -> Result<bool> {
    let t = now();
    let n = match dead {
        None => c.execute(
            "INSERT INTO ferry_remote (source, path, version, state, owner, claimed_at, \
             changed_at) VALUES ($1, $2, $3, 'claimed', $4, $5::text::timestamptz, \
             $5::text::timestamptz) ON CONFLICT DO NOTHING",
            &[&key.source, &key.path, &key.version, &owner, &t],
        )?,
        Some(dead) => c.execute(
            "UPDATE ferry_remote SET owner = $4, claimed_at = $5::text::timestamptz, \
             changed_at = $5::text::timestamptz, claims = claims + 1 WHERE source = $1 \
             AND path = $2 AND version = $3 AND state = 'claimed' AND owner = $6",
            &[&key.source, &key.path, &key.version, &owner, &t, &dead],
        )?,
    };
    Ok(n == 1)
}

pub fn release(c: &mut impl GenericClient, key: &RemoteKey, owner: &str) -> Result<()> {
    c.execute(
        "DELETE FROM ferry_remote WHERE source = $1 AND path = $2 AND version = $3 \
         AND state = 'claimed' AND owner = $4",
        &[&key.source, &key.path, &key.version, &owner],
    )?;
    Ok(())
}

pub fn ledger(c: &mut impl GenericClient, key: &RemoteKey) -> Result<Option<i64>> {
    Ok(c.query_one(
        "SELECT max(id) FROM files WHERE remote_source = $1 AND remote_path = $2 \
         AND remote_version = $3",
        &[&key.source, &key.path, &key.version],
    )?
    .get(0))
}

pub fn mark(
    c: &mut impl GenericClient,
    key: &RemoteKey,
    state: RemoteState,
    error: Option<&str>,
) -> Result<()> {
    c.execute(
        "UPDATE ferry_remote SET state = $4, owner = NULL, error = $5, \
         changed_at = $6::text::timestamptz WHERE source = $1 AND path = $2 AND version = $3",
        &[
            &key.source,
            &key.path,
            &key.version,
            &state.id(),
            &error,
            &now(),
        ],
    )?;
    Ok(())
}

pub fn claims(
    c: &mut Client,
    claims: &[(RemoteKey, Option<String>)],
    owner: &str,
) -> Result<Vec<bool>> {
    let mut tx = c.transaction()?;
    let mut out = Vec::with_capacity(claims.len());
    for (key, dead) in claims {
        out.push(claim(&mut tx, key, owner, dead.as_deref())?);
    }
    tx.commit()?;
    Ok(out)
}

pub fn committed(
    c: &mut Client,
    keys: &[RemoteKey],
    state: RemoteState,
    owner: &str,
    release: bool,
) -> Result<Vec<bool>> {
    let mut tx = c.transaction()?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let loaded = ledger(&mut tx, key)?.is_some();
        if loaded {
            mark(&mut tx, key, state, None)?;
        } else if release {
            self::release(&mut tx, key, owner)?;
        }
        out.push(loaded);
    }
    tx.commit()?;
    Ok(out)
}

pub fn forget(c: &mut Client, keys: &[RemoteKey]) -> Result<()> {
    let mut tx = c.transaction()?;
    for key in keys {
        tx.execute(
            "DELETE FROM ferry_remote WHERE source = $1 AND path = $2 AND version = $3 \
             AND state = 'finished'",
            &[&key.source, &key.path, &key.version],
        )?;
    }
    tx.commit()?;
    Ok(())
}
