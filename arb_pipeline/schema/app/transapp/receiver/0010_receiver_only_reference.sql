-- TranSappViz's part of the receiver that the pipeline relies on, for an empty receiver
-- (demo, tests): its own columns marked so loads never write them
-- (load.apply.receiver_only_columns), whatever a backup carries, and the reference rows
-- of the periods postprocessing assigns. A real receiver already has these from
-- TranSappViz's own migrations; there this file is recorded as adopted, not run.

COMMENT ON COLUMN "AndroidRequests_eventforbusstop".transformed IS 'arb:receiver-only';
COMMENT ON COLUMN "AndroidRequests_eventforbusstop"."timePeriod_id" IS 'arb:receiver-only';
COMMENT ON COLUMN "AndroidRequests_eventforbusstop"."halfHourPeriod_id" IS 'arb:receiver-only';
COMMENT ON COLUMN "AndroidRequests_eventforbusstop".zonification_id IS 'arb:receiver-only';
COMMENT ON COLUMN "AndroidRequests_eventforbusv2".transformed IS 'arb:receiver-only';
COMMENT ON COLUMN "AndroidRequests_eventforbusv2"."timePeriod_id" IS 'arb:receiver-only';
COMMENT ON COLUMN "AndroidRequests_eventforbusv2"."halfHourPeriod_id" IS 'arb:receiver-only';
COMMENT ON COLUMN "AndroidRequests_eventforbusv2".zonification_id IS 'arb:receiver-only';
COMMENT ON COLUMN "AndroidRequests_eventforbusv2".direction IS 'arb:receiver-only';
COMMENT ON COLUMN "AndroidRequests_eventforbusv2"."busStop1" IS 'arb:receiver-only';
COMMENT ON COLUMN "AndroidRequests_eventforbusv2"."busStop2" IS 'arb:receiver-only';
COMMENT ON COLUMN "AndroidRequests_busv2".transformed IS 'arb:receiver-only';
COMMENT ON COLUMN "AndroidRequests_busv2"."normalizedPlate" IS 'arb:receiver-only';
COMMENT ON COLUMN "AndroidRequests_report".transformed IS 'arb:receiver-only';
COMMENT ON COLUMN "AndroidRequests_busstop".transformed IS 'arb:receiver-only';

-- Time periods are closed ranges of local time of day, to the microsecond (timestamptz's
-- precision), tiling each day type without gaps.
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

