-- The ledger of backups this receiver has applied (or found superseded by a newer
-- complete). Loading a backup twice is a no-op; retention deletes only what is here.
-- Each replicated table also gets an `arb_synced_at` column (the sender snapshot time of
-- the backup that last wrote the row), added from the catalog by schema/catalog_sync.py.
CREATE TABLE IF NOT EXISTS arb_loaded_backup (
    backup_id text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('partial', 'complete')),
    partition_key text NOT NULL,
    sender_id text NOT NULL,
    manifest_sha256 text NOT NULL,
    snapshot_time timestamptz NOT NULL,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('loaded', 'superseded')),
    rows_in_backup bigint NOT NULL,
    rows_written bigint NOT NULL,
    rows_deleted bigint NOT NULL DEFAULT 0,
    loaded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS arb_loaded_backup_kind_snapshot_time_idx ON arb_loaded_backup (kind, snapshot_time);
