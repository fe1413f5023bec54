-- Postprocessing (issue 5): the receiver's derivations live in tables it owns, keyed by
-- the source row's primary key, so a complete reload never wipes them; they go with
-- their source row (ON DELETE CASCADE). They supersede the derived columns of 0003
-- (transformed, timePeriod_id, ...), which stay for compatibility but are not filled.

-- 1. The change marker. Inserts take the default; the loader sets it to
-- clock_timestamp() on every update that changes a row's replicated content (not on
-- a partial's version-only refresh). Existing rows keep NULL: the first run of each
-- derivation is a full one. Receiver-only, so a backup never writes it.
ALTER TABLE "AndroidRequests_eventforbusstop" ADD COLUMN arb_changed_at timestamptz;
ALTER TABLE "AndroidRequests_eventforbusv2" ADD COLUMN arb_changed_at timestamptz;
ALTER TABLE "AndroidRequests_stadisticdatafromregistrationbusstop" ADD COLUMN arb_changed_at timestamptz;
ALTER TABLE "AndroidRequests_stadisticdatafromregistrationbus" ADD COLUMN arb_changed_at timestamptz;
ALTER TABLE "AndroidRequests_report" ADD COLUMN arb_changed_at timestamptz;
ALTER TABLE "AndroidRequests_busv2" ADD COLUMN arb_changed_at timestamptz;
ALTER TABLE "AndroidRequests_token" ADD COLUMN arb_changed_at timestamptz;
ALTER TABLE "AndroidRequests_poseintrajectoryoftoken" ADD COLUMN arb_changed_at timestamptz;

ALTER TABLE "AndroidRequests_eventforbusstop" ALTER COLUMN arb_changed_at SET DEFAULT clock_timestamp();
ALTER TABLE "AndroidRequests_eventforbusv2" ALTER COLUMN arb_changed_at SET DEFAULT clock_timestamp();
ALTER TABLE "AndroidRequests_stadisticdatafromregistrationbusstop" ALTER COLUMN arb_changed_at SET DEFAULT clock_timestamp();
ALTER TABLE "AndroidRequests_stadisticdatafromregistrationbus" ALTER COLUMN arb_changed_at SET DEFAULT clock_timestamp();
ALTER TABLE "AndroidRequests_report" ALTER COLUMN arb_changed_at SET DEFAULT clock_timestamp();
ALTER TABLE "AndroidRequests_busv2" ALTER COLUMN arb_changed_at SET DEFAULT clock_timestamp();
ALTER TABLE "AndroidRequests_token" ALTER COLUMN arb_changed_at SET DEFAULT clock_timestamp();
ALTER TABLE "AndroidRequests_poseintrajectoryoftoken" ALTER COLUMN arb_changed_at SET DEFAULT clock_timestamp();

COMMENT ON COLUMN "AndroidRequests_eventforbusstop".arb_changed_at IS 'arb:receiver-only: when a load last changed the row';
COMMENT ON COLUMN "AndroidRequests_eventforbusv2".arb_changed_at IS 'arb:receiver-only: when a load last changed the row';
COMMENT ON COLUMN "AndroidRequests_stadisticdatafromregistrationbusstop".arb_changed_at IS 'arb:receiver-only: when a load last changed the row';
COMMENT ON COLUMN "AndroidRequests_stadisticdatafromregistrationbus".arb_changed_at IS 'arb:receiver-only: when a load last changed the row';
COMMENT ON COLUMN "AndroidRequests_report".arb_changed_at IS 'arb:receiver-only: when a load last changed the row';
COMMENT ON COLUMN "AndroidRequests_busv2".arb_changed_at IS 'arb:receiver-only: when a load last changed the row';
COMMENT ON COLUMN "AndroidRequests_token".arb_changed_at IS 'arb:receiver-only: when a load last changed the row';
COMMENT ON COLUMN "AndroidRequests_poseintrajectoryoftoken".arb_changed_at IS 'arb:receiver-only: when a load last changed the row';

CREATE INDEX ON "AndroidRequests_eventforbusstop" (arb_changed_at);
CREATE INDEX ON "AndroidRequests_eventforbusv2" (arb_changed_at);
CREATE INDEX ON "AndroidRequests_stadisticdatafromregistrationbusstop" (arb_changed_at);
CREATE INDEX ON "AndroidRequests_stadisticdatafromregistrationbus" (arb_changed_at);
CREATE INDEX ON "AndroidRequests_report" (arb_changed_at);
CREATE INDEX ON "AndroidRequests_busv2" (arb_changed_at);
CREATE INDEX ON "AndroidRequests_token" (arb_changed_at);
CREATE INDEX ON "AndroidRequests_poseintrajectoryoftoken" (arb_changed_at);
-- Direction: a phone's trips, and the bus events of a phone around a time.
CREATE INDEX ON "AndroidRequests_token" ("phoneId");
CREATE INDEX ON "AndroidRequests_eventforbusv2" ("phoneId", "timeCreation");

-- 2. Reference data. Time periods are closed ranges of local time of day, to the
-- microsecond (timestamptz's precision), tiling each day type without gaps.
ALTER TABLE "AndroidRequests_timeperiod" ADD UNIQUE ("dayType", "initialTime");
ALTER TABLE "AndroidRequests_zonification" ADD UNIQUE (comuna, zona);

INSERT INTO "AndroidRequests_timeperiod" ("dayType", name, "initialTime", "endTime")
SELECT d, n, s::time, e::time - interval '1 microsecond'
FROM (VALUES
    ('Laboral', 'Pre nocturno', '00:00', '01:00'),
    ('Laboral', 'Nocturno', '01:00', '05:30'),
    ('Laboral', 'Transición nocturno', '05:30', '06:30'),
    ('Laboral', 'Punta mañana', '06:30', '08:30'),
    ('Laboral', 'Transición punta mañana', '08:30', '09:30'),
    ('Laboral', 'Fuera de punta mañana', '09:30', '12:30'),
    ('Laboral', 'Punta mediodía', '12:30', '14:00'),
    ('Laboral', 'Fuera de punta tarde', '14:00', '17:30'),
    ('Laboral', 'Punta tarde', '17:30', '20:30'),
    ('Laboral', 'Transición punta tarde', '20:30', '21:30'),
    ('Laboral', 'Fuera de punta nocturno', '21:30', '23:00'),
    ('Laboral', 'Pre nocturno', '23:00', '24:00'),
    ('Sábado', 'Pre nocturno sábado', '00:00', '01:00'),
    ('Sábado', 'Nocturno sábado', '01:00', '05:30'),
    ('Sábado', 'Transición sábado mañana', '05:30', '06:30'),
    ('Sábado', 'Punta mañana sábado', '06:30', '11:00'),
    ('Sábado', 'Mañana sábado', '11:00', '13:30'),
    ('Sábado', 'Punta mediodía sábado', '13:30', '17:30'),
    ('Sábado', 'Tarde sábado', '17:30', '20:30'),
    ('Sábado', 'Transición sábado nocturno', '20:30', '23:00'),
    ('Sábado', 'Pre nocturno sábado', '23:00', '24:00'),
    ('Domingo', 'Pre nocturno domingo', '00:00', '01:00'),
    ('Domingo', 'Nocturno domingo', '01:00', '05:30'),
    ('Domingo', 'Transición domingo mañana', '05:30', '09:30'),
    ('Domingo', 'Mañana domingo', '09:30', '12:30'),
    ('Domingo', 'Mediodía domingo', '12:30', '20:30'),
    ('Domingo', 'Tarde domingo', '20:30', '23:00'),
    ('Domingo', 'Pre nocturno domingo', '23:00', '24:00')
) AS p(d, n, s, e)
ORDER BY CASE d WHEN 'Laboral' THEN 1 WHEN 'Sábado' THEN 2 ELSE 3 END, s;

INSERT INTO "AndroidRequests_halfhourperiod" (name, "initialTime", "endTime")
SELECT to_char(t, 'HH24:MI') || '-' || to_char(t + interval '30 minutes', 'HH24:MI'), t::time,
       (t + interval '30 minutes' - interval '1 microsecond')::time
FROM generate_series(timestamp '2000-01-01 00:00', timestamp '2000-01-01 23:30', interval '30 minutes') AS t
ORDER BY t;

-- 3. The derived tables: one per derivation and source table. `source_changed_at` is
-- the source row's arb_changed_at the row was computed from; `processed_at` the snapshot
-- time of the run that computed it (it reflects every load committed before then);
-- `problem` says what was wrong with the row's data (the row is still written, so it
-- is not retried forever). Ids of reference rows (periods, zones) carry no foreign
-- key: a change of reference data recomputes every row anyway (a digest, see
-- postprocess/engine.py), and the checks would cost a third of the write.
CREATE TABLE arb_pp_eventforbusstop_period (
    id integer PRIMARY KEY REFERENCES "AndroidRequests_eventforbusstop"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    source_changed_at timestamptz,
    local_time_creation timestamp,
    day_type varchar(8),
    time_period_id integer,        -- AndroidRequests_timeperiod.id
    half_hour_period_id integer,   -- AndroidRequests_halfhourperiod.id
    problem text,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE arb_pp_eventforbusv2_period (LIKE arb_pp_eventforbusstop_period INCLUDING DEFAULTS);
ALTER TABLE arb_pp_eventforbusv2_period ADD PRIMARY KEY (id),
    ADD FOREIGN KEY (id) REFERENCES "AndroidRequests_eventforbusv2"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE arb_pp_busv2_plate (
    id integer PRIMARY KEY REFERENCES "AndroidRequests_busv2"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    source_changed_at timestamptz,
    plate_format text,             -- DUMMYLPT | AAAA11 | BB1234
    normalized_plate text,         -- "No Info.", "AA AA 11", "BB 12 34"
    problem text,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- What the client sent is text of any length: nothing here can fail a batch.
CREATE TABLE arb_pp_report_info (
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
CREATE INDEX ON arb_pp_report_info (bus_uuid) WHERE report_type = 'bus' AND bus_uuid IS NULL;

CREATE TABLE arb_pp_eventforbusstop_zone (
    id integer PRIMARY KEY REFERENCES "AndroidRequests_eventforbusstop"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    source_changed_at timestamptz,
    longitude double precision,    -- of the event's newest vote
    latitude double precision,
    zone_id integer,               -- AndroidRequests_zonification.id
    problem text,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE arb_pp_eventforbusv2_zone (LIKE arb_pp_eventforbusstop_zone INCLUDING DEFAULTS);
ALTER TABLE arb_pp_eventforbusv2_zone ADD PRIMARY KEY (id),
    ADD FOREIGN KEY (id) REFERENCES "AndroidRequests_eventforbusv2"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
CREATE TABLE arb_pp_report_zone (LIKE arb_pp_eventforbusstop_zone INCLUDING DEFAULTS);
ALTER TABLE arb_pp_report_zone ADD PRIMARY KEY (id),
    ADD FOREIGN KEY (id) REFERENCES "AndroidRequests_report"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
COMMENT ON COLUMN arb_pp_report_zone.longitude IS 'the user''s location from reportInfo';

CREATE TABLE arb_pp_eventforbusv2_direction (
    id integer PRIMARY KEY REFERENCES "AndroidRequests_eventforbusv2"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    source_changed_at timestamptz,
    direction char(1),             -- I | R, from the trip token; NULL: no trip or no direction
    token_id integer,
    pose_time timestamptz,         -- the token's latest pose at or before the event's creation
    problem text,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE arb_pp_eventforbusv2_nearest_stops (
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

-- Where each derivation got to: rows changed after done_through are pending; a new
-- reference digest (zones, periods, stops, settings) means a full reprocess.
CREATE TABLE arb_postprocess_state (
    derivation text PRIMARY KEY,
    done_through timestamptz,
    reference_digest text,
    last_run_at timestamptz,
    last_full_at timestamptz
);
