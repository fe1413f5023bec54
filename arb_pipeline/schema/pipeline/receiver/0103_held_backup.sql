-- Complete backups held by the guard on mass deletion (load/hold.py): what each would
-- delete, and the operator's approval (`arb approve BACKUP_ID`), for that manifest only.
CREATE TABLE IF NOT EXISTS arb_held_backup (
    backup_id text PRIMARY KEY,
    manifest_sha256 text NOT NULL,
    reason text NOT NULL,
    held_at timestamptz NOT NULL DEFAULT now(),
    approved_at timestamptz,
    approved_by text
);
