-- Roll back a cutover (docs/cutover.md): remove everything `arb migrate` and the role
-- scripts added to a database whose app tables Django created, on either server. The
-- pipeline's objects are additive, so the app's tables, their rows and the old tool's
-- columns stay as they are; rows the pipeline loaded stay too (they are the sender's).
--
-- Stop the pipeline's services first. Run as the database's owner (or a superuser):
--
--   psql -X -v ON_ERROR_STOP=1 -v role=arb_receiver -d transappviz -f deploy/sql/rollback.sql
--   psql -X -v ON_ERROR_STOP=1 -v role=arb_sender -d transapp -f deploy/sql/rollback.sql
--
-- (-v role=... also drops the pipeline's role and what it owns here; leave it out to keep
-- the role). On a database the project created from empty (the demo, tests), drop the
-- whole database instead: its app tables came from `arb migrate` too.
\set ON_ERROR_STOP on
BEGIN;

-- The pipeline's tables: migrations ledger, role table list, backup ledger,
-- postprocessing's derived tables and state. None of the app's tables references them.
DROP TABLE IF EXISTS
    arb_schema_migration, arb_role_table, arb_loaded_backup, arb_postprocess_state,
    arb_pp_eventforbusstop_period, arb_pp_eventforbusv2_period, arb_pp_busv2_plate,
    arb_pp_report_info, arb_pp_eventforbusstop_zone, arb_pp_eventforbusv2_zone,
    arb_pp_report_zone, arb_pp_eventforbusv2_direction, arb_pp_eventforbusv2_nearest_stops;

-- Complete loads' scratch tables.
DROP SCHEMA IF EXISTS arb_stage CASCADE;

-- The pipeline's columns on the app's tables (their indexes and comments go with them):
-- arb_synced_at (the version of a row a backup wrote) and arb_changed_at
-- (postprocessing's change marker).
SELECT format('ALTER TABLE public.%I DROP COLUMN %I', table_name, column_name)
FROM information_schema.columns
WHERE table_schema = 'public' AND column_name IN ('arb_synced_at', 'arb_changed_at')
ORDER BY table_name, column_name \gexec

-- Postprocessing's lookup indexes, created only where no index led by those columns existed.
DROP INDEX IF EXISTS "AndroidRequests_token_phoneId_idx", "AndroidRequests_eventforbusv2_phoneId_timeCreation_idx";

\if :{?role}
  DROP OWNED BY :"role";
  DROP ROLE :"role";
\endif
COMMIT;
\echo 'rollback.sql: the pipeline''s objects are gone from' :DBNAME
