-- Postprocessing (TranSapp): the receiver's derivations live in tables the pipeline owns,
-- keyed by the source row's primary key, so a complete reload never wipes them; they go
-- with their source row (ON DELETE CASCADE). Applied when the catalog names
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
    -- Direction also looks up a phone's trips, and the bus events of a phone around a time.
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
            ('AndroidRequests_eventforbusv2', ARRAY['phoneId', 'timeCreation'])
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
            EXECUTE format('CREATE INDEX ON %I (%s)', ix.t,
                           (SELECT string_agg(format('%I', c), ', ') FROM unnest(ix.cols) AS c));
        END IF;
    END LOOP;
END $$;

-- 2. The derived tables: one per derivation and source table. `source_changed_at` is
-- the source row's arb_changed_at the row was computed from; `processed_at` the snapshot
-- time of the run that computed it (it reflects every load committed before then);
-- `problem` says what was wrong with the row's data (the row is still written, so it
-- is not retried forever). Ids of reference rows (periods, zones) carry no foreign
-- key: a change of reference data recomputes every row anyway (a digest, see
-- postprocess/engine.py), and the checks would cost a third of the write.
CREATE TABLE IF NOT EXISTS arb_pp_eventforbusstop_period (
    id integer PRIMARY KEY REFERENCES "AndroidRequests_eventforbusstop"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    source_changed_at timestamptz,
    local_time_creation timestamp,
    day_type varchar(8),
    time_period_id integer,        -- AndroidRequests_timeperiod.id
    half_hour_period_id integer,   -- AndroidRequests_halfhourperiod.id
    problem text,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
DO $$ BEGIN
IF to_regclass('public.arb_pp_eventforbusv2_period') IS NULL THEN
    CREATE TABLE arb_pp_eventforbusv2_period (LIKE arb_pp_eventforbusstop_period INCLUDING DEFAULTS);
    ALTER TABLE arb_pp_eventforbusv2_period ADD PRIMARY KEY (id),
        ADD FOREIGN KEY (id) REFERENCES "AndroidRequests_eventforbusv2"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
END IF;
END $$;

CREATE TABLE IF NOT EXISTS arb_pp_busv2_plate (
    id integer PRIMARY KEY REFERENCES "AndroidRequests_busv2"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    source_changed_at timestamptz,
    plate_format text,             -- DUMMYLPT | AAAA11 | BB1234
    normalized_plate text,         -- "No Info.", "AA AA 11", "BB 12 34"
    problem text,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- What the client sent is text of any length: nothing here can fail a batch.
CREATE TABLE IF NOT EXISTS arb_pp_report_info (
    id integer PRIMARY KEY REFERENCES "AndroidRequests_report"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    source_changed_at timestamptz,
    report_type text,              -- bus | busStop
    plate_raw text,
    plate text,                    -- normalised like arb_pp_busv2_plate
    service text,
    machine_id text,
    bus_uuid uuid,
    stop_code text,
    latitude double precision,     -- the bus's or the stop's
    longitude double precision,
    user_latitude double precision,
    user_longitude double precision,
    problem text,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS arb_pp_report_info_bus_uuid_idx ON arb_pp_report_info (bus_uuid) WHERE report_type = 'bus' AND bus_uuid IS NULL;

CREATE TABLE IF NOT EXISTS arb_pp_eventforbusstop_zone (
    id integer PRIMARY KEY REFERENCES "AndroidRequests_eventforbusstop"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    source_changed_at timestamptz,
    longitude double precision,    -- of the event's newest vote
    latitude double precision,
    zone_id integer,               -- AndroidRequests_zonification.id
    problem text,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
DO $$ BEGIN
IF to_regclass('public.arb_pp_eventforbusv2_zone') IS NULL THEN
    CREATE TABLE arb_pp_eventforbusv2_zone (LIKE arb_pp_eventforbusstop_zone INCLUDING DEFAULTS);
    ALTER TABLE arb_pp_eventforbusv2_zone ADD PRIMARY KEY (id),
        ADD FOREIGN KEY (id) REFERENCES "AndroidRequests_eventforbusv2"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
END IF;
END $$;
DO $$ BEGIN
IF to_regclass('public.arb_pp_report_zone') IS NULL THEN
    CREATE TABLE arb_pp_report_zone (LIKE arb_pp_eventforbusstop_zone INCLUDING DEFAULTS);
    ALTER TABLE arb_pp_report_zone ADD PRIMARY KEY (id),
        ADD FOREIGN KEY (id) REFERENCES "AndroidRequests_report"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
END IF;
END $$;
COMMENT ON COLUMN arb_pp_report_zone.longitude IS 'the user''s location from reportInfo';

CREATE TABLE IF NOT EXISTS arb_pp_eventforbusv2_direction (
    id integer PRIMARY KEY REFERENCES "AndroidRequests_eventforbusv2"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    source_changed_at timestamptz,
    direction char(1),             -- I | R, from the trip token; NULL: no trip or no direction
    token_id integer,
    pose_time timestamptz,         -- the token's latest pose at or before the event's creation
    problem text,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS arb_pp_eventforbusv2_nearest_stops (
    id integer PRIMARY KEY REFERENCES "AndroidRequests_eventforbusv2"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    source_changed_at timestamptz,
    longitude double precision,    -- of the event's newest vote
    latitude double precision,
    gtfs_id integer,               -- the GTFS version in force when the event was created
    stop1_code varchar(6),
    stop1_distance_m double precision,
    stop2_code varchar(6),
    stop2_distance_m double precision,
    problem text,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- 3. Where each derivation got to: rows changed after done_through are pending; a new
-- reference digest (zones, periods, stops, settings) means a full reprocess.
CREATE TABLE IF NOT EXISTS arb_postprocess_state (
    derivation text PRIMARY KEY,
    done_through timestamptz,
    reference_digest text,
    last_run_at timestamptz,
    last_full_at timestamptz
);
