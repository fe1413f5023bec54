-- Change capture (issue 18). The ledger records each backup's slot position: a complete's
-- capture_lsn (the exact position its snapshot was taken at), a captured partial's to_lsn.
-- Each replicated table's `arb_synced_lsn` column (commit LSN of the row's last captured
-- change) is added from the catalog by schema/catalog_sync.py, as `arb_synced_at` is.
ALTER TABLE arb_loaded_backup ADD COLUMN IF NOT EXISTS capture_lsn pg_lsn;
-- A captured delete's tombstone: a captured partial loaded late must not bring back a row a
-- later captured change deleted. Tombstones older than the newest complete's capture_lsn
-- no longer matter (that complete holds the row's state) and are pruned by its load.
CREATE TABLE IF NOT EXISTS arb_captured_delete (
    table_name text NOT NULL,
    row_key text NOT NULL,  -- ROW(primary key columns)::text, typed by the receiver
    commit_lsn pg_lsn NOT NULL,
    PRIMARY KEY (table_name, row_key)
);
