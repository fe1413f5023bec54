-- The sender's reading role: backups read the catalog's tables in a snapshot and nothing
-- else, so the role that makes them can SELECT exactly those tables and write nothing.
-- It owns nothing and has no DDL; the app's own role keeps everything else.
--
-- Run as the database's owner (or a superuser), after `arb migrate --role sender`
-- (which writes the table list, arb_role_table, from the catalog and changes nothing of
-- the app's), and again after a catalog change; it is idempotent:
--
--   psql -X -v ON_ERROR_STOP=1 -v role=arb_sender -d transapp -f deploy/sql/sender-role.sql
--   psql -X -d transapp -c '\password arb_sender'     # the password never on a command line
--
-- then ARB_SENDER_DSN="host=... dbname=transapp user=arb_sender password=...".
\set ON_ERROR_STOP on
\if :{?role}
\else
  \echo 'sender-role.sql: set the role to create: psql -v role=arb_sender ...'
  DO $$ BEGIN RAISE EXCEPTION 'psql variable "role" is not set: run with -v role=arb_sender'; END $$;
\endif
SELECT current_database() AS dbname \gset
BEGIN;

SELECT to_regclass('public.arb_role_table') IS NULL AS no_list \gset
\if :no_list
  DO $$ BEGIN RAISE EXCEPTION 'the sender database has no arb_role_table: run `arb migrate --role sender` first'; END $$;
\endif
SELECT string_agg(name, ', ' ORDER BY name) AS missing_tables FROM arb_role_table
WHERE to_regclass(format('public.%I', name)) IS NULL \gset
\if :{?missing_tables}
  \echo 'sender-role.sql: missing table(s):' :missing_tables
  DO $$ BEGIN RAISE EXCEPTION 'the sender database lacks tables of the catalog: fix the catalog or the database, then run `arb migrate --role sender`'; END $$;
\endif

-- A role that owns something keeps an owner's rights whatever is granted here.
SELECT EXISTS (SELECT FROM pg_class c WHERE pg_get_userbyid(c.relowner) = :'role')
       OR EXISTS (SELECT FROM pg_namespace WHERE pg_get_userbyid(nspowner) = :'role')
       OR EXISTS (SELECT FROM pg_database WHERE datname = current_database() AND pg_get_userbyid(datdba) = :'role')
       AS owns_objects \gset
\if :owns_objects
  DO $$ BEGIN RAISE EXCEPTION 'the role given owns the database, a schema or tables (the app''s role?): the reading role must own nothing; pick a new role name (-v role=arb_sender)'; END $$;
\endif

SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT;
-- Every session of the role is read-only, whatever a bug in the pipeline would try.
ALTER ROLE :"role" SET default_transaction_read_only = on;

GRANT CONNECT ON DATABASE :"dbname" TO :"role";
GRANT USAGE ON SCHEMA public TO :"role";
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM :"role";
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM :"role";
SELECT format('GRANT SELECT ON TABLE public.%I TO %I', name, :'role') FROM arb_role_table ORDER BY name \gexec

\ir role-powers.sql
SELECT string_agg(c.relname, ', ' ORDER BY c.relname) AS writable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND (has_table_privilege(:'role', c.oid, 'INSERT') OR has_table_privilege(:'role', c.oid, 'UPDATE')
       OR has_table_privilege(:'role', c.oid, 'DELETE') OR has_table_privilege(:'role', c.oid, 'TRUNCATE')) \gset
\if :{?writable}
  \echo 'sender-role.sql: writable through PUBLIC grants:' :writable
  DO $$ BEGIN RAISE EXCEPTION 'the role can write tables (granted to PUBLIC): revoke those grants from PUBLIC'; END $$;
\endif
COMMIT;
\echo 'sender-role.sql: role' :"role" 'can read the catalog''s tables of' :"dbname"
