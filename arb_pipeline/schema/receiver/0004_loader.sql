-- What the loader needs on the receiver.
--
-- arb_synced_at: the sender snapshot time (sender's database clock) of the backup
-- that last wrote the row. A load writes a row only when its backup's snapshot is not
-- older than the stored one, so backups can arrive in any order and the newest
-- version wins, whether or not the app moved the row's timestamp (bulk updates).
-- A complete load deletes only rows it is newer than.

ALTER TABLE "AndroidRequests_gtfs" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_busstop" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_service" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_servicesbybusstop" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_servicestopdistance" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_route" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_event" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_busv2" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_busassignment" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_level" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_transappuser" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_eventforbusstop" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_eventforbusv2" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_stadisticdatafromregistrationbusstop" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_stadisticdatafromregistrationbus" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_report" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_token" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_poseintrajectoryoftoken" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_activetoken" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_devicepositionintime" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_nearbybuseslog" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_scoreevent" ADD COLUMN arb_synced_at timestamptz;
ALTER TABLE "AndroidRequests_scorehistory" ADD COLUMN arb_synced_at timestamptz;

-- The ledger of backups this receiver has applied (or found superseded by a newer
-- complete). Loading a backup twice is a no-op; retention deletes only what is here.
CREATE TABLE arb_loaded_backup (
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
CREATE INDEX ON arb_loaded_backup (kind, snapshot_time);
