-- The pipeline's own objects are written to run on any database the catalog's tables
-- live in, created by the app's own migrations or by the project: IF NOT EXISTS
-- throughout, so a database that already has them (an older layout) is left as it is.

-- Which tables the pipeline's database role may use, and how; `arb migrate` rewrites it
-- from the catalog on every run (schema/catalog_sync.py) and deploy/sql/*-role.sql
-- grant exactly this list.
CREATE TABLE IF NOT EXISTS arb_role_table (
    name text PRIMARY KEY,
    access text NOT NULL CHECK (access IN ('read', 'write'))
);
