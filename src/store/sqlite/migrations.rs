//! The SQLite store's schema, versioned through `PRAGMA user_version`.
//!
//! Each migration is applied once, in order, inside one transaction with the version bump.
//! Never edit a migration that has shipped: add the next one.

use rusqlite::Connection;

/// Migrations in order; migration `i` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the file ledger and the dataset registry.
    r#"
    CREATE TABLE files (
        id            INTEGER PRIMARY KEY,
        path          TEXT NOT NULL,      -- as dropped, relative to the folder it was found in
        source        TEXT NOT NULL,      -- that folder
        claim         TEXT,               -- claim id under processing/ (NULL with --keep)
        sha256        TEXT,               -- NULL only for entries never read (symlinks)
        size          INTEGER NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ('ingested', 'duplicate', 'quarantined')),
        dataset       TEXT,
        format        TEXT,
        records       INTEGER NOT NULL DEFAULT 0,
        rejected      INTEGER NOT NULL DEFAULT 0,
        duplicate_of  INTEGER REFERENCES files(id),
        stored_at     TEXT,               -- where the file ended, relative to the spool root
        error_kind    TEXT,
        error_stage   TEXT,
        error_message TEXT,
        error_line    INTEGER,
        error_offset  INTEGER,
        error_field   TEXT,
        attempt       INTEGER NOT NULL DEFAULT 1,
        retry_of      INTEGER REFERENCES files(id),
        received_at   TEXT NOT NULL,      -- claimed (or first read, with --keep)
        hashed_at     TEXT,
        parsed_at     TEXT,
        finished_at   TEXT NOT NULL,      -- committed
        worker        TEXT
    );
    CREATE UNIQUE INDEX files_one_ingest ON files(sha256) WHERE state = 'ingested';
    CREATE INDEX files_path_sha ON files(path, sha256);
    CREATE INDEX files_claim ON files(claim) WHERE claim IS NOT NULL;
    CREATE UNIQUE INDEX files_stored_at ON files(stored_at) WHERE stored_at IS NOT NULL;
    CREATE INDEX files_state ON files(state, id);
    CREATE INDEX files_dataset ON files(dataset, state);

    CREATE TABLE datasets (
        name        TEXT PRIMARY KEY,
        table_name  TEXT NOT NULL UNIQUE COLLATE NOCASE,
        created_at  TEXT NOT NULL
    );
    "#,
    // 2: record-level outcomes — rejected records, records skipped as duplicate keys, and where
    // a file's rejects report was written.
    r#"
    ALTER TABLE files ADD COLUMN duplicate_records INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE files ADD COLUMN rejects_at TEXT;
    CREATE TABLE rejects (
        file_id INTEGER NOT NULL REFERENCES files(id),
        line    INTEGER,
        field   TEXT,
        value   TEXT,
        reason  TEXT NOT NULL
    );
    CREATE INDEX rejects_file ON rejects(file_id);
    CREATE INDEX files_retry_of ON files(retry_of) WHERE retry_of IS NOT NULL;
    "#,
    // 3: export targets — each with its watermark (the last record id exported) and the batch
    // being written, fixed before its first byte so an interrupted export rewrites exactly it.
    r#"
    CREATE TABLE exports (
        dataset            TEXT NOT NULL,
        target             TEXT NOT NULL,
        dir                TEXT NOT NULL,
        watermark          INTEGER NOT NULL DEFAULT 0,
        batches            INTEGER NOT NULL DEFAULT 0,
        rows               INTEGER NOT NULL DEFAULT 0,
        created_at         TEXT NOT NULL,
        exported_at        TEXT,
        pending_name       TEXT,
        pending_format     TEXT,
        pending_gzip       INTEGER,
        pending_first      INTEGER,
        pending_last       INTEGER,
        pending_rows       INTEGER,
        pending_created_at TEXT,
        pending_columns    TEXT,               -- JSON array: the columns the batch carries
        PRIMARY KEY (dataset, target)
    );
    CREATE TABLE export_batches (
        dataset    TEXT NOT NULL,
        target     TEXT NOT NULL,
        name       TEXT NOT NULL,
        format     TEXT NOT NULL,
        first_id   INTEGER NOT NULL,
        last_id    INTEGER NOT NULL,
        rows       INTEGER NOT NULL,
        sha256     TEXT NOT NULL,
        bytes      INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (dataset, target, first_id)
    );
    "#,
    // 4: names decided once (the column each file column lands in, per dataset); a file's
    // identity is its dataset plus its content (the same bytes sent for two feeds load into
    // both); warnings a file was stored with; the kind of each rejected record.
    r#"
    CREATE TABLE dataset_columns (
        dataset     TEXT NOT NULL,
        source      TEXT NOT NULL,      -- the file's column name, without surrounding spaces
        occurrence  INTEGER NOT NULL,   -- 2 for the second column of that name in one header, …
        column_name TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (dataset, source, occurrence),
        UNIQUE (dataset, column_name)
    );
    DROP INDEX files_one_ingest;
    CREATE UNIQUE INDEX files_one_ingest ON files(dataset, sha256) WHERE state = 'ingested';
    ALTER TABLE files ADD COLUMN warnings TEXT;   -- JSON array of sentences
    ALTER TABLE rejects ADD COLUMN kind TEXT;
    "#,
    // 5: a report's name is checked for collisions like a file's place.
    r#"
    CREATE INDEX files_rejects_at ON files(rejects_at) WHERE rejects_at IS NOT NULL;
    "#,
    // 6: retention — when `ferry prune` removed the file at `stored_at`; a quarantined file an
    // operator gave up on (`quarantine discard`), when and why.
    r#"
    ALTER TABLE files ADD COLUMN pruned_at TEXT;
    ALTER TABLE files ADD COLUMN discarded_at TEXT;
    ALTER TABLE files ADD COLUMN discard_reason TEXT;
    CREATE INDEX files_finished ON files(finished_at) WHERE pruned_at IS NULL;
    "#,
    // 7: no file column lands in a column ferry keeps for itself: a registry entry that
    // mapped a later file's `_id` (or `_file_id`, `_line`, `_key`) onto ferry's own column is
    // forgotten, so that file column gets a name of its own next time.
    r#"
    DELETE FROM dataset_columns
     WHERE lower(column_name) IN ('_id', '_file_id', '_line', '_key');
    "#,
    // 8: record keys in the store (R-record-key): each keyed table's definition, `covered`
    // mark and highest id ever given; the runs of its key index and their slices; and the
    // records a file replaced (`on_key = "update"`).
    r#"
    CREATE TABLE ferry_keys (
        table_name TEXT PRIMARY KEY,
        covered    INTEGER NOT NULL DEFAULT 0, -- every keyed record up to this id is in a run
        high_id    INTEGER NOT NULL DEFAULT 0, -- the highest record id ever given
        definition TEXT,                       -- the key, as JSON (NULL: none any more)
        defined_at TEXT,
        generation INTEGER NOT NULL DEFAULT 0  -- one more at each re-key
    );
    CREATE TABLE ferry_key_runs (
        run        INTEGER PRIMARY KEY,
        table_name TEXT NOT NULL,
        lo         INTEGER NOT NULL,           -- covers records (lo, hi]
        hi         INTEGER NOT NULL,
        entries    INTEGER NOT NULL,
        bits       INTEGER NOT NULL,           -- slices: a hash's top `bits` bits
        created_at TEXT NOT NULL
    );
    CREATE INDEX ferry_key_runs_table ON ferry_key_runs (table_name, lo);
    CREATE TABLE ferry_key_slices (
        k    INTEGER PRIMARY KEY,              -- run << 32 | slice
        data BLOB NOT NULL                     -- (hash, id) pairs, 16 bytes each, by hash
    );
    ALTER TABLE files ADD COLUMN updated_records INTEGER NOT NULL DEFAULT 0;
    "#,
    // 9: remote sources (`[[source]]`): which remote file a ledger row came from, and one
    // claim per remote file and version (held by its owner until its file committed, then
    // what `after` says, then finished).
    r#"
    ALTER TABLE files ADD COLUMN remote_source TEXT;
    ALTER TABLE files ADD COLUMN remote_path TEXT;
    ALTER TABLE files ADD COLUMN remote_version TEXT;
    CREATE INDEX files_remote ON files (remote_source, remote_path, remote_version)
        WHERE remote_source IS NOT NULL;
    CREATE TABLE ferry_remote (
        source     TEXT NOT NULL,
        path       TEXT NOT NULL,
        version    TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('claimed', 'loaded', 'finished')),
        owner      TEXT,                -- the claim's owner token while claimed
        claimed_at TEXT NOT NULL,
        changed_at TEXT NOT NULL,
        claims     INTEGER NOT NULL DEFAULT 1, -- how many times it was claimed (taken over)
        error      TEXT,                -- the last failed disposal (`after`)
        PRIMARY KEY (source, path, version)
    );
    "#,
    // 10: deliveries (receipts, webhooks): each channel's start, and one row per file it
    // delivered or tried to.
    r#"
    CREATE TABLE ferry_channels (
        channel TEXT PRIMARY KEY,
        since   TEXT NOT NULL           -- files finished from then on are owed a notice;
                                        -- moved on past what was delivered
    );
    CREATE TABLE ferry_deliveries (
        channel      TEXT NOT NULL,
        file_id      INTEGER NOT NULL,
        name         TEXT,              -- what it was delivered as
        attempts     INTEGER NOT NULL DEFAULT 0,
        delivered_at TEXT,
        error        TEXT,              -- the last failed attempt's
        retry_at     TEXT,              -- not tried again before
        PRIMARY KEY (channel, file_id)
    );
    CREATE INDEX ferry_deliveries_name ON ferry_deliveries (channel, name);
    CREATE INDEX files_finished_at ON files (finished_at);
    "#,
    // 11: containers (archives, OpenPGP files): a member's row names its container's, and a
    // verified signer is kept.
    r#"
    ALTER TABLE files ADD COLUMN container_id INTEGER;
    ALTER TABLE files ADD COLUMN signer TEXT;
    CREATE INDEX files_container ON files (container_id) WHERE container_id IS NOT NULL;
    "#,
];

/// The schema version this build writes.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the database up to the latest schema. Refuses a database written by a newer ferry.
pub fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest() {
        anyhow::bail!(
            "the ledger has schema version {current}, newer than this ferry understands ({}); \
             upgrade ferry",
            latest()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now > i as i64 {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_in_order_and_are_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest());
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        conn.execute_batch(&format!("PRAGMA user_version = {}", latest() + 1))
            .unwrap();
        assert!(migrate(&mut conn).is_err());
    }
}
