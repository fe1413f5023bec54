-- Roll back a cutover (docs/cutover.md): remove everything `arb migrate` and the role
-- scripts added to a database whose app tables Django created, on either server. The
-- pipeline's objects are additive, so the app's tables, their rows and the old tool's
-- columns stay as they are; rows the pipeline loaded stay too (they are the sender's), and
-- so do TranSappViz's own columns and tables that `arb migrate` added where they were
-- missing (schema/postprocess/transapp/receiver/0200_transappviz.sql): they are the app's.
--
-- Stop the pipeline's services first; on the sender, if change capture was set up, run
-- `arb capture drop` first (a replication slot left behind keeps WAL forever). Run as the
-- database's owner (or a superuser):
--
--   psql -X -v ON_ERROR_STOP=1 -v role=arb_receiver -d transappviz -f deploy/sql/rollback.sql
--   psql -X -v ON_ERROR_STOP=1 -v role=arb_sender -d transapp -f deploy/sql/rollback.sql
--
-- (-v role=... also drops the pipeline's role and what it owns here; leave it out to keep
-- the role). On a database the project created from empty (the demo, tests), drop the
-- whole database instead: its app tables came from `arb migrate` too.
\set ON_ERROR_STOP on
BEGIN;

-- The pipeline's tables, all named arb_*: migrations ledger, role table list, backup
-- ledger, postprocessing's state and problems. None of the app's tables references them.
SELECT format('DROP TABLE IF EXISTS public.%I CASCADE', c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname LIKE 'arb\_%'
ORDER BY c.relname \gexec

-- Postprocessing's trigger on reports (deleting a report's reportinfo rows) goes with its function.
DROP FUNCTION IF EXISTS arb_delete_reportinfo() CASCADE;

-- Complete loads' scratch tables.
DROP SCHEMA IF EXISTS arb_stage CASCADE;

-- The pipeline's columns on the app's tables (their indexes and comments go with them):
-- arb_synced_at (the version of a row a backup wrote), arb_synced_lsn (the commit LSN of its
-- last captured change) and arb_changed_at (postprocessing's change marker).
SELECT format('ALTER TABLE public.%I DROP COLUMN %I', table_name, column_name)
FROM information_schema.columns
WHERE table_schema = 'public' AND column_name IN ('arb_synced_at', 'arb_synced_lsn', 'arb_changed_at')
ORDER BY table_name, column_name \gexec

-- The mark the receiver's migrations put on TranSappViz's own columns so loads never write
-- them (a comment starting 'arb:receiver-only'): the columns stay, the mark goes.
SELECT format('COMMENT ON COLUMN public.%I.%I IS NULL', c.relname, a.attname)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped
  AND col_description(c.oid, a.attnum) LIKE 'arb:receiver-only%'
ORDER BY c.relname, a.attname \gexec

-- Postprocessing's lookup indexes on the app's tables, all named arb_idx_*.
SELECT format('DROP INDEX IF EXISTS public.%I', c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'i' AND c.relname LIKE 'arb\_idx\_%'
ORDER BY c.relname \gexec

\if :{?role}
  DROP OWNED BY :"role";
  DROP ROLE :"role";
\endif
COMMIT;
\echo 'rollback.sql: the pipeline''s objects are gone from' :DBNAME
