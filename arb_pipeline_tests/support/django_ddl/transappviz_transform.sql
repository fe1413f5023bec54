-- What TranSappViz's own transform.py (InspectorIncognito/visualization at 6f97058) left on
-- an old receiver, in SQL: run once over the old tool's copy, as its cron ran it over every
-- window. Faithful to the original's quirks, which the pipeline's equivalence table lists:
-- Transantiago periods from the UTC clock (it reads timeCreation unconverted), half hours
-- from Santiago's; an event's zone and nearest stops from its latest vote's position; the
-- stop points tagged SRID 32140 while holding degrees; a reportInfo user position parsed
-- from a string minus its first two characters (a number gives NULL); plates reformatted
-- in place. Events without votes keep NULL zones and stops (the original skips them).
BEGIN;

-- validate_plates: 'DUMMYLPT' -> 'No Info.'; AAAA11 / AA1111 -> 'AA AA 11' / 'AA 11 11'.
UPDATE "AndroidRequests_busv2" SET transformed = true, "registrationPlate" = CASE
    WHEN upper("registrationPlate") = 'DUMMYLPT' THEN 'No Info.'
    WHEN upper("registrationPlate") ~ '^([A-Z]{4}[0-9]{2}|[A-Z]{2}[0-9]{4})$'
        THEN upper(substr("registrationPlate", 1, 2)) || ' ' || upper(substr("registrationPlate", 3, 2))
             || ' ' || substr("registrationPlate", 5)
    ELSE "registrationPlate" END;

-- add_time_periods and add_half_hour_periods.
UPDATE "AndroidRequests_eventforbusv2" e SET
    "timePeriod_id" = (
        SELECT p.id FROM "AndroidRequests_timeperiod" p
        WHERE p.day_type = CASE extract(isodow FROM e."timeCreation" AT TIME ZONE 'UTC')
                WHEN 6 THEN 'Sábado' WHEN 7 THEN 'Domingo' ELSE 'Laboral' END
          AND date_trunc('second', e."timeCreation" AT TIME ZONE 'UTC')::time BETWEEN p.initial_time AND p.end_time),
    "halfHourPeriod_id" = (
        SELECT h.id FROM "AndroidRequests_halfhourperiod" h
        WHERE date_trunc('second', e."timeCreation" AT TIME ZONE 'America/Santiago')::time
              BETWEEN h.initial_time AND h.end_time);
UPDATE "AndroidRequests_eventforbusstop" e SET
    "timePeriod_id" = (
        SELECT p.id FROM "AndroidRequests_timeperiod" p
        WHERE p.day_type = CASE extract(isodow FROM e."timeCreation" AT TIME ZONE 'UTC')
                WHEN 6 THEN 'Sábado' WHEN 7 THEN 'Domingo' ELSE 'Laboral' END
          AND date_trunc('second', e."timeCreation" AT TIME ZONE 'UTC')::time BETWEEN p.initial_time AND p.end_time),
    "halfHourPeriod_id" = (
        SELECT h.id FROM "AndroidRequests_halfhourperiod" h
        WHERE date_trunc('second', e."timeCreation" AT TIME ZONE 'America/Santiago')::time
              BETWEEN h.initial_time AND h.end_time);

-- add_nearest_busstops: every stop gets its point; a bus event its two nearest stops.
UPDATE "AndroidRequests_busstop" SET point = ST_SetSRID(ST_MakePoint(longitude, latitude), 32140),
    transformed = true;

-- add_county (zones) and the nearest stops, from each event's latest vote.
WITH v AS (
    SELECT DISTINCT ON ("reportOfEvent_id") "reportOfEvent_id" AS id, longitude, latitude
    FROM "AndroidRequests_stadisticdatafromregistrationbus" ORDER BY "reportOfEvent_id", "timeStamp" DESC
)
UPDATE "AndroidRequests_eventforbusv2" e SET
    zonification_id = (SELECT z.id FROM "AndroidRequests_zonificationtransantiago" z
                       WHERE ST_Intersects(z.geom, ST_SetSRID(ST_MakePoint(v.longitude, v.latitude), 4326))
                       ORDER BY z.id LIMIT 1),
    "busStop1" = (SELECT b.code FROM "AndroidRequests_busstop" b
                  ORDER BY b.point <-> ST_SetSRID(ST_MakePoint(v.longitude, v.latitude), 32140), b.id LIMIT 1),
    "busStop2" = (SELECT b.code FROM "AndroidRequests_busstop" b
                  ORDER BY b.point <-> ST_SetSRID(ST_MakePoint(v.longitude, v.latitude), 32140), b.id
                  OFFSET 1 LIMIT 1)
FROM v WHERE v.id = e.id;
WITH v AS (
    SELECT DISTINCT ON ("reportOfEvent_id") "reportOfEvent_id" AS id, longitude, latitude
    FROM "AndroidRequests_stadisticdatafromregistrationbusstop" ORDER BY "reportOfEvent_id", "timeStamp" DESC
)
UPDATE "AndroidRequests_eventforbusstop" e SET
    zonification_id = (SELECT z.id FROM "AndroidRequests_zonificationtransantiago" z
                       WHERE ST_Intersects(z.geom, ST_SetSRID(ST_MakePoint(v.longitude, v.latitude), 4326))
                       ORDER BY z.id LIMIT 1)
FROM v WHERE v.id = e.id;

-- add_direction_eventforbus_reportinfo: the direction of the phone's latest trip pose.
UPDATE "AndroidRequests_eventforbusv2" e SET direction = (
    SELECT k.direction FROM "AndroidRequests_poseintrajectoryoftoken" p
    JOIN "AndroidRequests_token" k ON k.id = p.token_id
    WHERE k."phoneId" = e."phoneId" AND p."timeStamp" <= e."timeStamp"
    ORDER BY p."timeStamp" DESC LIMIT 1);
UPDATE "AndroidRequests_eventforbusv2" SET transformed = true;
UPDATE "AndroidRequests_eventforbusstop" SET transformed = true;

-- add_report_info: a row per report with a bus, bus_stop or busStop object.
INSERT INTO "AndroidRequests_reportinfo" ("reportType", "busUUID", service, "registrationPlate", "stopCode",
    longitude, latitude, report_id, "userLatitude", "userLongitude", direction, transformed)
SELECT CASE WHEN j ? 'bus' THEN 'bus' ELSE 'busStop' END,
       (j -> 'bus' ->> 'machineId')::uuid,
       CASE WHEN length(j -> 'bus' ->> 'service') > 5 THEN '-' ELSE j -> 'bus' ->> 'service' END,
       CASE WHEN j ? 'bus' THEN (SELECT b."registrationPlate" FROM "AndroidRequests_busv2" b
                                 WHERE b.uuid = (j -> 'bus' ->> 'machineId')::uuid) ELSE '' END,
       coalesce(j -> 'bus_stop', j -> 'busStop') ->> 'id',
       (coalesce(j -> 'bus', j -> 'bus_stop', j -> 'busStop') ->> 'longitude')::float,
       (coalesce(j -> 'bus', j -> 'bus_stop', j -> 'busStop') ->> 'latitude')::float,
       r.id,
       CASE WHEN jsonb_typeof(j -> 'locationUser' -> 'latitude') = 'string'
            THEN substr(j -> 'locationUser' ->> 'latitude', 3)::float END,
       CASE WHEN jsonb_typeof(j -> 'locationUser' -> 'longitude') = 'string'
            THEN substr(j -> 'locationUser' ->> 'longitude', 3)::float END,
       CASE WHEN j ? 'bus' THEN (
           SELECT k.direction FROM "AndroidRequests_poseintrajectoryoftoken" p
           JOIN "AndroidRequests_token" k ON k.id = p.token_id
           WHERE k."phoneId" = r."phoneId" AND p."timeStamp" <= r."timeStamp"
           ORDER BY p."timeStamp" DESC LIMIT 1) END,
       true
FROM "AndroidRequests_report" r, LATERAL (SELECT r."reportInfo"::jsonb AS j) x
WHERE j ?| ARRAY['bus', 'bus_stop', 'busStop']
ORDER BY r.id;
UPDATE "AndroidRequests_reportinfo" i SET zonification_id = (
    SELECT z.id FROM "AndroidRequests_zonificationtransantiago" z
    WHERE ST_Intersects(z.geom, ST_SetSRID(ST_MakePoint(i."userLongitude", i."userLatitude"), 4326))
    ORDER BY z.id LIMIT 1);
UPDATE "AndroidRequests_report" SET transformed = true;
COMMIT;
