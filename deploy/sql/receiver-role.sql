-- The receiver's loader role: it loads backups and runs postprocessing, and can do
-- nothing else. It owns no table, cannot run DDL in schema public, create databases
-- or roles, or write any table outside the list below. Migrations stay with the
-- database's owner (the admin); loads, checks and postprocessing use this role.
--
-- Run as the database's owner (or a superuser), after `arb migrate --role receiver`,
-- and again after every `arb migrate` that adds a table, or a catalog change (it is
-- idempotent and resets the role's table privileges to exactly arb_role_table's list):
--
--   psql -X -v ON_ERROR_STOP=1 -v role=arb_receiver -d transappviz -f deploy/sql/receiver-role.sql
--   psql -X -d transappviz -c '\password arb_receiver'     # the password never on a command line
--
-- then ARB_RECEIVER_DSN="host=... dbname=transappviz user=arb_receiver password=...".
-- Pause the receiver's sensors while it runs: leftover staging tables are dropped.
\set ON_ERROR_STOP on
\if :{?role}
\else
  \echo 'receiver-role.sql: set the role to create: psql -v role=arb_receiver ...'
  DO $$ BEGIN RAISE EXCEPTION 'psql variable "role" is not set: run with -v role=arb_receiver'; END $$;
\endif
SELECT current_database() AS dbname \gset
BEGIN;

-- What the role may write and what it may only read: the list `arb migrate` keeps in
-- arb_role_table from the catalog (the replicated tables, the ledger, the postprocessing
-- tables; the reference tables postprocessing reads; the migration ledgers).
SELECT to_regclass('public.arb_role_table') IS NULL AS no_list \gset
\if :no_list
  DO $$ BEGIN RAISE EXCEPTION 'the receiver database has no arb_role_table: run `arb migrate --role receiver` first'; END $$;
\endif
CREATE TEMP TABLE arb_role_tables ON COMMIT DROP AS SELECT name, access FROM arb_role_table;
SELECT NOT EXISTS (SELECT FROM arb_role_tables WHERE access = 'write') AS empty_list \gset
\if :empty_list
  DO $$ BEGIN RAISE EXCEPTION 'arb_role_table lists no table to load into: run `arb migrate --role receiver` first'; END $$;
\endif

SELECT string_agg(name, ', ' ORDER BY name) AS missing_tables FROM arb_role_tables
WHERE to_regclass(format('public.%I', name)) IS NULL \gset
\if :{?missing_tables}
  \echo 'receiver-role.sql: missing table(s):' :missing_tables
  DO $$ BEGIN RAISE EXCEPTION 'the receiver database lacks tables of the role''s list: run `arb migrate --role receiver` first'; END $$;
\endif

-- A role that owns something (the admin's own, the database's owner) keeps an owner's
-- rights whatever is granted here: refuse it. Its own leftover staging tables aside.
SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE pg_get_userbyid(c.relowner) = :'role' AND n.nspname <> 'arb_stage'
                 AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%')
       OR EXISTS (SELECT FROM pg_namespace WHERE pg_get_userbyid(nspowner) = :'role')
       OR EXISTS (SELECT FROM pg_database WHERE datname = current_database() AND pg_get_userbyid(datdba) = :'role')
       AS owns_objects \gset
\if :owns_objects
  DO $$ BEGIN RAISE EXCEPTION 'the role given owns the database, a schema or tables: the loader''s role must own nothing; pick a new role name (-v role=arb_receiver)'; END $$;
\endif

SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT;
-- Loads and postprocessing need a large work_mem for whole-table hash joins; it is a
-- session setting the role may SET itself, nothing to grant.

GRANT CONNECT, TEMPORARY ON DATABASE :"dbname" TO :"role";   -- partials stage in temporary tables
GRANT USAGE ON SCHEMA public TO :"role";
-- Completes stage whole tables in UNLOGGED tables of arb_stage from parallel sessions,
-- so the role creates (and, as their owner, analyzes and drops) tables there. The
-- schema holds nothing else and is on nobody's search_path.
GRANT USAGE, CREATE ON SCHEMA arb_stage TO :"role";
SELECT format('DROP TABLE arb_stage.%I', tablename) FROM pg_tables
WHERE schemaname = 'arb_stage' AND tableowner <> :'role' \gexec

-- Exactly the listed privileges: earlier grants on tables and sequences are reset.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM :"role";
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM :"role";
SELECT format('GRANT %s ON TABLE public.%I TO %I',
              CASE access WHEN 'write' THEN 'SELECT, INSERT, UPDATE, DELETE' ELSE 'SELECT' END, name, :'role')
FROM arb_role_tables ORDER BY name \gexec
-- Loads move serial sequences past the loaded ids (setval, reading last_value).
SELECT format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE %s TO %I', s.oid::regclass, :'role')
FROM arb_role_tables t
JOIN pg_depend d ON d.refobjid = format('public.%I', t.name)::regclass AND d.classid = 'pg_class'::regclass
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
WHERE t.access = 'write' ORDER BY 1 \gexec

-- Check the outcome, including what PUBLIC or a role membership would give.
\ir role-powers.sql
SELECT has_schema_privilege(:'role', 'public', 'CREATE') AS public_create \gset
\if :public_create
  DO $$ BEGIN RAISE EXCEPTION 'the role can create objects in schema public (PUBLIC has CREATE there, the default before PostgreSQL 15): REVOKE CREATE ON SCHEMA public FROM PUBLIC and grant it to the roles that need it'; END $$;
\endif
SELECT string_agg(c.relname, ', ' ORDER BY c.relname) AS extra_writable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND c.relname NOT IN (SELECT name FROM arb_role_tables WHERE access = 'write')
  AND (has_table_privilege(:'role', c.oid, 'INSERT') OR has_table_privilege(:'role', c.oid, 'UPDATE')
       OR has_table_privilege(:'role', c.oid, 'DELETE') OR has_table_privilege(:'role', c.oid, 'TRUNCATE')) \gset
\if :{?extra_writable}
  \echo 'receiver-role.sql: writable through PUBLIC grants:' :extra_writable
  DO $$ BEGIN RAISE EXCEPTION 'the role can write tables outside its list (granted to PUBLIC): revoke those grants from PUBLIC'; END $$;
\endif
COMMIT;
\echo 'receiver-role.sql: role' :"role" 'can load into' :"dbname"
