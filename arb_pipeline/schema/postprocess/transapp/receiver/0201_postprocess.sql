-- Postprocessing (TranSapp): the derivations write TranSappViz's own columns and tables
-- (migration 0200, receiver-only, so loads never write them); this file adds what the
-- pipeline needs to run them incrementally. Applied when the catalog names
-- `postprocess = "transapp"`, on a receiver the project created or one TranSappViz did:
-- only the pipeline's own columns, indexes and tables, each created if missing.

-- 1. The change marker. Inserts take the default; the loader sets it to
-- clock_timestamp() on every update that changes a row's replicated content (not on
-- a partial's version-only refresh). Existing rows keep NULL: the first run of each
-- derivation is a full one. Receiver-only, so a backup never writes it.
DO $$
DECLARE
    t text;
    ix record;
BEGIN
    FOREACH t IN ARRAY ARRAY['AndroidRequests_eventforbusstop', 'AndroidRequests_eventforbusv2',
        'AndroidRequests_stadisticdatafromregistrationbusstop', 'AndroidRequests_stadisticdatafromregistrationbus',
        'AndroidRequests_report', 'AndroidRequests_busv2', 'AndroidRequests_token',
        'AndroidRequests_poseintrajectoryoftoken']
    LOOP
        -- Added without a default first: a volatile default would rewrite the table and
        -- stamp every existing row; they keep NULL.
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS arb_changed_at timestamptz', t);
        EXECUTE format('ALTER TABLE %I ALTER COLUMN arb_changed_at SET DEFAULT clock_timestamp()', t);
        EXECUTE format('COMMENT ON COLUMN %I.arb_changed_at IS %L', t,
                       'arb:receiver-only: when a load last changed the row');
    END LOOP;
    -- Direction also looks up a phone's trips, and the bus events of a phone around a time;
    -- a report's direction, the trips of its phone.
    FOR ix IN
        SELECT v.t, v.cols FROM (VALUES
            ('AndroidRequests_eventforbusstop', ARRAY['arb_changed_at']),
            ('AndroidRequests_eventforbusv2', ARRAY['arb_changed_at']),
            ('AndroidRequests_stadisticdatafromregistrationbusstop', ARRAY['arb_changed_at']),
            ('AndroidRequests_stadisticdatafromregistrationbus', ARRAY['arb_changed_at']),
            ('AndroidRequests_report', ARRAY['arb_changed_at']),
            ('AndroidRequests_busv2', ARRAY['arb_changed_at']),
            ('AndroidRequests_token', ARRAY['arb_changed_at']),
            ('AndroidRequests_poseintrajectoryoftoken', ARRAY['arb_changed_at']),
            ('AndroidRequests_token', ARRAY['phoneId']),
            ('AndroidRequests_eventforbusv2', ARRAY['phoneId', 'timeCreation']),
            ('AndroidRequests_poseintrajectoryoftoken', ARRAY['token_id', 'timeStamp'])
        ) AS v(t, cols)
    LOOP
        -- An index led by these columns may exist already, under Django's or an older name.
        IF NOT EXISTS (
            SELECT FROM pg_index i
            WHERE i.indrelid = format('public.%I', ix.t)::regclass
              AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
                   FROM unnest(string_to_array(i.indkey::text, ' ')::int2[]) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   WHERE k.ord <= cardinality(ix.cols)) = ix.cols
        ) THEN
            -- Named arb_idx_* so deploy/sql/rollback.sql finds exactly the pipeline's own.
            EXECUTE format('CREATE INDEX %I ON %I (%s)', 'arb_idx_' || left(md5(ix.t || array_to_string(ix.cols, ',')), 12),
                           ix.t, (SELECT string_agg(format('%I', c), ', ') FROM unnest(ix.cols) AS c));
        END IF;
    END LOOP;
END $$;

-- 2. Rows a derivation could not derive (a malformed reportInfo, a point in no zone, no
-- stops for a GTFS version, a plate in no known format): one row per derivation and
-- source row, replaced each time the row is computed, gone when it derives cleanly.
-- Keyed by the source's table and id, without a foreign key (sources are several
-- tables): a run drops the problems of source rows deleted since.
CREATE TABLE IF NOT EXISTS arb_pp_problem (
    derivation text NOT NULL,
    source_table text NOT NULL,
    source_id integer NOT NULL,
    problem text NOT NULL,
    source_changed_at timestamptz,  -- the source row's arb_changed_at it was computed from
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (derivation, source_table, source_id)
);

-- 3. Where each derivation got to: rows changed after done_through are pending; a new
-- reference digest (zones, periods, stops, settings) means a full reprocess.
CREATE TABLE IF NOT EXISTS arb_postprocess_state (
    derivation text PRIMARY KEY,
    done_through timestamptz,
    reference_digest text,
    last_run_at timestamptz,
    last_full_at timestamptz,
    deletes_seen jsonb  -- per source table, its deleted-row count when problems were last swept
);

-- 4. Per source table, the change time up to which `transformed` was set: rows changed
-- after it are looked at when every derivation of the table has passed them.
CREATE TABLE IF NOT EXISTS arb_pp_transformed (
    source_table text PRIMARY KEY,
    done_through timestamptz NOT NULL
);

-- 5. TranSappViz's reportinfo rows are derived from their report. On a receiver
-- TranSappViz created, their foreign key does not cascade (Django cascades in Python,
-- not in the database), so a complete deleting a report would fail at commit. The
-- pipeline's own trigger does Django's part; where the key cascades it changes nothing.
CREATE OR REPLACE FUNCTION arb_delete_reportinfo() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    DELETE FROM "AndroidRequests_reportinfo" WHERE report_id = OLD.id;
    RETURN OLD;
END
$f$;
CREATE OR REPLACE TRIGGER arb_delete_reportinfo BEFORE DELETE ON "AndroidRequests_report"
    FOR EACH ROW EXECUTE FUNCTION arb_delete_reportinfo();
