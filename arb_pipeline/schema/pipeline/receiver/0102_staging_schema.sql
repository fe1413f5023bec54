-- Complete loads stage whole tables in parallel sessions before their one merging
-- transaction; the staging tables (UNLOGGED, scratch) live here, apart from the data.
CREATE SCHEMA IF NOT EXISTS arb_stage;
