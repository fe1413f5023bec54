-- TranSappViz's own part of the receiver: its receiver-only columns on replicated tables,
-- its reference tables and their rows, with exactly its names and types (Django models of
-- InspectorIncognito/visualization at 6f97058: AndroidRequests/models.py, migrations 09*).
-- Runs on every receiver: on one TranSappViz created it adds only what is missing and
-- changes nothing it finds; on an empty one (demo, tests) it creates all of it.
-- Needs PostGIS: `arb migrate` checks before it starts that the extension is installed
-- or that it may create it (schema/migrate.py, _check_extension).
CREATE EXTENSION IF NOT EXISTS postgis;

-- Reference tables. Django's AutoField is a serial; the zones keep the shapefile's ids.
CREATE TABLE IF NOT EXISTS "AndroidRequests_timeperiod" (
    id serial PRIMARY KEY,
    day_type varchar(8) NOT NULL,
    name varchar(30) NOT NULL,
    initial_time time NOT NULL,
    end_time time NOT NULL
);
CREATE TABLE IF NOT EXISTS "AndroidRequests_halfhourperiod" (
    id serial PRIMARY KEY,
    name varchar(30) NOT NULL,
    initial_time time NOT NULL,
    end_time time NOT NULL
);
CREATE TABLE IF NOT EXISTS "AndroidRequests_zonificationtransantiago" (
    id integer PRIMARY KEY,
    area double precision NOT NULL,
    zona double precision NOT NULL,
    com varchar(80) NOT NULL,
    comuna varchar(80) NOT NULL,
    cartodb_id integer NOT NULL,
    created_at date NOT NULL,
    updated_at date NOT NULL,
    comunidad_field double precision,
    geom geometry(MultiPolygon, 4326) NOT NULL
);
CREATE TABLE IF NOT EXISTS "AndroidRequests_reportinfo" (
    id serial PRIMARY KEY,
    "reportType" varchar(7) NOT NULL,
    "busUUID" uuid,
    service varchar(11),
    "registrationPlate" varchar(8) NOT NULL,
    "stopCode" varchar(6),
    longitude double precision NOT NULL,
    latitude double precision NOT NULL,
    -- Derived from its report, so it goes with it: a complete load's deletions know only
    -- replicated tables (load/deletes.py). Django's own constraint is NO ACTION.
    report_id integer NOT NULL REFERENCES "AndroidRequests_report"(id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    zonification_id integer REFERENCES "AndroidRequests_zonificationtransantiago"(id)
        DEFERRABLE INITIALLY DEFERRED,
    transformed boolean DEFAULT false,
    direction varchar(1),
    "userLatitude" double precision,
    "userLongitude" double precision
);

-- Receiver-only columns on replicated tables (Django: NullBooleanField, nullable FKs and
-- CharFields). `transformed` defaults to false as Django's ORM writes it, so a row a load
-- inserts reads "not transformed yet"; where TranSappViz made the column it is left as is.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT * FROM (VALUES
            ('AndroidRequests_eventforbusv2', 'timePeriod_id', 'integer', 'AndroidRequests_timeperiod'),
            ('AndroidRequests_eventforbusv2', 'halfHourPeriod_id', 'integer', 'AndroidRequests_halfhourperiod'),
            ('AndroidRequests_eventforbusv2', 'zonification_id', 'integer', 'AndroidRequests_zonificationtransantiago'),
            ('AndroidRequests_eventforbusv2', 'busStop1', 'varchar(6)', NULL),
            ('AndroidRequests_eventforbusv2', 'busStop2', 'varchar(6)', NULL),
            ('AndroidRequests_eventforbusv2', 'transformed', 'boolean DEFAULT false', NULL),
            ('AndroidRequests_eventforbusv2', 'direction', 'varchar(1)', NULL),
            ('AndroidRequests_eventforbusstop', 'timePeriod_id', 'integer', 'AndroidRequests_timeperiod'),
            ('AndroidRequests_eventforbusstop', 'halfHourPeriod_id', 'integer', 'AndroidRequests_halfhourperiod'),
            ('AndroidRequests_eventforbusstop', 'zonification_id', 'integer', 'AndroidRequests_zonificationtransantiago'),
            ('AndroidRequests_eventforbusstop', 'transformed', 'boolean DEFAULT false', NULL),
            ('AndroidRequests_busstop', 'transformed', 'boolean DEFAULT false', NULL),
            ('AndroidRequests_busstop', 'point', 'geometry(Point, 32140)', NULL),
            ('AndroidRequests_busv2', 'transformed', 'boolean DEFAULT false', NULL),
            ('AndroidRequests_report', 'transformed', 'boolean DEFAULT false', NULL)
        ) AS v(tab, col, typ, ref)
    LOOP
        IF NOT EXISTS (
            SELECT FROM pg_attribute
            WHERE attrelid = format('public.%I', c.tab)::regclass AND attname = c.col AND NOT attisdropped
        ) THEN
            EXECUTE format('ALTER TABLE %I ADD COLUMN %I %s', c.tab, c.col, c.typ);
            IF c.ref IS NOT NULL THEN
                EXECUTE format('ALTER TABLE %I ADD FOREIGN KEY (%I) REFERENCES %I(id) DEFERRABLE INITIALLY DEFERRED',
                               c.tab, c.col, c.ref);
            END IF;
        END IF;
        -- Loads never write a column marked so (load/apply.py), whatever a backup carries.
        EXECUTE format('COMMENT ON COLUMN %I.%I IS %L', c.tab, c.col, 'arb:receiver-only');
    END LOOP;
END $$;

-- The indexes Django makes (one per foreign key; GiST on each geometry), where no index
-- led by the column exists yet under any name.
DO $$
DECLARE
    ix record;
BEGIN
    FOR ix IN
        SELECT * FROM (VALUES
            ('AndroidRequests_eventforbusv2', 'timePeriod_id', 'btree'),
            ('AndroidRequests_eventforbusv2', 'halfHourPeriod_id', 'btree'),
            ('AndroidRequests_eventforbusv2', 'zonification_id', 'btree'),
            ('AndroidRequests_eventforbusstop', 'timePeriod_id', 'btree'),
            ('AndroidRequests_eventforbusstop', 'halfHourPeriod_id', 'btree'),
            ('AndroidRequests_eventforbusstop', 'zonification_id', 'btree'),
            ('AndroidRequests_reportinfo', 'report_id', 'btree'),
            ('AndroidRequests_reportinfo', 'zonification_id', 'btree'),
            ('AndroidRequests_zonificationtransantiago', 'geom', 'gist'),
            ('AndroidRequests_busstop', 'point', 'gist')
        ) AS v(tab, col, method)
    LOOP
        IF NOT EXISTS (
            SELECT FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = format('public.%I', ix.tab)::regclass AND a.attname = ix.col
        ) THEN
            EXECUTE format('CREATE INDEX ON %I USING %s (%I)', ix.tab, ix.method, ix.col);
        END IF;
    END LOOP;
END $$;

-- Reference rows, only into an empty table: a receiver's own rows are never touched.
-- Transantiago's periods, as TranSappViz's migration 0900 writes them (names without
-- accents where it has none; closed ranges to the second). Its Domingo 'Nocturno domingo'
-- row has the malformed end time '05:29:5905:30:00'; Django's time parser matches its
-- leading '05:29:59', which is what TranSappViz's database holds, so that is stored here.
INSERT INTO "AndroidRequests_timeperiod" (day_type, name, initial_time, end_time)
SELECT d, n, s::time, e::time
FROM (VALUES
    (1, 'Laboral', 'Pre nocturno', '00:00:00', '00:59:59'),
    (2, 'Laboral', 'Nocturno', '01:00:00', '05:29:59'),
    (3, 'Laboral', 'Transicion nocturno', '05:30:00', '06:29:59'),
    (4, 'Laboral', 'Punta mañana', '06:30:00', '08:29:59'),
    (5, 'Laboral', 'Transicion punta mañana', '08:30:00', '09:29:59'),
    (6, 'Laboral', 'Fuera de punta mañana', '09:30:00', '12:29:59'),
    (7, 'Laboral', 'Punta mediodia', '12:30:00', '13:59:59'),
    (8, 'Laboral', 'Fuera de punta tarde', '14:00:00', '17:29:59'),
    (9, 'Laboral', 'Punta tarde', '17:30:00', '20:29:59'),
    (10, 'Laboral', 'Transicion punta tarde', '20:30:00', '21:29:59'),
    (11, 'Laboral', 'Fuera de punta nocturno', '21:30:00', '22:59:59'),
    (12, 'Laboral', 'Pre nocturno', '23:00:00', '23:59:59'),
    (13, 'Sábado', 'Pre nocturno sábado', '00:00:00', '00:59:59'),
    (14, 'Sábado', 'Nocturno sábado', '01:00:00', '05:29:59'),
    (15, 'Sábado', 'Transicion sábado mañana', '05:30:00', '06:29:59'),
    (16, 'Sábado', 'Punta mañana sábado', '06:30:00', '10:59:59'),
    (17, 'Sábado', 'Mañana sábado', '11:00:00', '13:29:59'),
    (18, 'Sábado', 'Punta mediodia sábado', '13:30:00', '17:29:59'),
    (19, 'Sábado', 'Tarde sábado', '17:30:00', '20:29:59'),
    (20, 'Sábado', 'Transicion sábado nocturno', '20:30:00', '22:59:59'),
    (21, 'Sábado', 'Pre nocturno sábado', '23:00:00', '23:59:59'),
    (22, 'Domingo', 'Pre nocturno domingo', '00:00:00', '00:59:59'),
    (23, 'Domingo', 'Nocturno domingo', '01:00:00', '05:29:59'),
    (24, 'Domingo', 'Transicion domingo mañana', '05:30:00', '09:29:59'),
    (25, 'Domingo', 'Mañana domingo', '09:30:00', '13:29:59'),
    (26, 'Domingo', 'Mediodia domingo', '13:30:00', '17:29:59'),
    (27, 'Domingo', 'Tarde domingo', '17:30:00', '20:59:59'),
    (28, 'Domingo', 'Transicion domingo', '21:00:00', '22:59:59'),
    (29, 'Domingo', 'Pre nocturno domingo', '23:00:00', '23:59:59')
) AS p(k, d, n, s, e)
WHERE NOT EXISTS (SELECT FROM "AndroidRequests_timeperiod")
ORDER BY k;

-- Migration 0903: '00:00 - 00:29' ... '23:30 - 23:59', each to its last second.
INSERT INTO "AndroidRequests_halfhourperiod" (name, initial_time, end_time)
SELECT to_char(t, 'HH24:MI') || ' - ' || to_char(t + interval '29 minutes', 'HH24:MI'),
       t::time, (t + interval '29 minutes 59 seconds')::time
FROM generate_series(timestamp '2000-01-01 00:00', timestamp '2000-01-01 23:30', interval '30 minutes') AS t
WHERE NOT EXISTS (SELECT FROM "AndroidRequests_halfhourperiod")
ORDER BY t;
