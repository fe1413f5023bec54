-- Receiver-only columns and tables (TranSappViz). Loads write only the sender's
-- columns, so everything here survives partial and complete loads.

-- Reference data for postprocessing.
CREATE TABLE "AndroidRequests_timeperiod" (
    id serial PRIMARY KEY,
    "dayType" varchar(8) NOT NULL CHECK ("dayType" IN ('Laboral', 'Sábado', 'Domingo')),
    name varchar(50) NOT NULL,
    "initialTime" time NOT NULL,
    "endTime" time NOT NULL
);

CREATE TABLE "AndroidRequests_halfhourperiod" (
    id serial PRIMARY KEY,
    name varchar(20) NOT NULL UNIQUE,
    "initialTime" time NOT NULL,
    "endTime" time NOT NULL
);

-- Zones as polygons in WKT (lon lat, EPSG:4326); no PostGIS needed.
CREATE TABLE "AndroidRequests_zonification" (
    id serial PRIMARY KEY,
    comuna varchar(50) NOT NULL,
    zona integer NOT NULL,
    polygon_wkt text NOT NULL
);

CREATE TABLE "AndroidRequests_reportinfo" (
    id serial PRIMARY KEY,
    -- Derived from a report: goes when the report goes (a complete load applies deletions).
    report_id integer NOT NULL UNIQUE REFERENCES "AndroidRequests_report"(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    "reportType" varchar(10),
    "busUUID" uuid,
    service varchar(11),
    plate varchar(12),
    "stopCode" varchar(6),
    latitude double precision,
    longitude double precision,
    "userLatitude" double precision,
    "userLongitude" double precision,
    zonification_id integer REFERENCES "AndroidRequests_zonification"(id),
    direction char(1),
    problem text
);

-- Receiver-only columns on replicated tables. `transformed` is reset to false by
-- a load whenever a row's replicated content changes, so postprocessing redoes it.
ALTER TABLE "AndroidRequests_eventforbusstop"
    ADD COLUMN transformed boolean NOT NULL DEFAULT false,
    ADD COLUMN "timePeriod_id" integer REFERENCES "AndroidRequests_timeperiod"(id),
    ADD COLUMN "halfHourPeriod_id" integer REFERENCES "AndroidRequests_halfhourperiod"(id),
    ADD COLUMN zonification_id integer REFERENCES "AndroidRequests_zonification"(id);

ALTER TABLE "AndroidRequests_eventforbusv2"
    ADD COLUMN transformed boolean NOT NULL DEFAULT false,
    ADD COLUMN "timePeriod_id" integer REFERENCES "AndroidRequests_timeperiod"(id),
    ADD COLUMN "halfHourPeriod_id" integer REFERENCES "AndroidRequests_halfhourperiod"(id),
    ADD COLUMN zonification_id integer REFERENCES "AndroidRequests_zonification"(id),
    ADD COLUMN direction char(1),
    ADD COLUMN "busStop1" varchar(6),
    ADD COLUMN "busStop2" varchar(6);

ALTER TABLE "AndroidRequests_busv2" ADD COLUMN transformed boolean NOT NULL DEFAULT false,
    ADD COLUMN "normalizedPlate" varchar(12);
ALTER TABLE "AndroidRequests_report" ADD COLUMN transformed boolean NOT NULL DEFAULT false;
ALTER TABLE "AndroidRequests_busstop" ADD COLUMN transformed boolean NOT NULL DEFAULT false;
