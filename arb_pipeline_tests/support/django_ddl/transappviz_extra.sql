-- What TranSappViz (InspectorIncognito/visualization at 6f97058, a Django 1.x + GeoDjango app)
-- has beyond TranSapp's tables, as its `manage.py migrate` creates it on PostgreSQL + PostGIS:
-- written from its AndroidRequests/models.py and migrations 09* (/work/shared/notes/
-- transappviz-schema.md), independently of arb_pipeline/schema/. Django's conventions, as in
-- transapp.sql: `serial` ids, NOT NULL unless null=True, no database defaults (a
-- NullBooleanField(default=False) is `boolean NULL`: the default lives in Python), foreign
-- keys as named DEFERRABLE INITIALLY DEFERRED constraints with NO ACTION (Django cascades in
-- Python), an index per foreign key, GiST indexes named `<table>_<column>_id`.
-- Apply after transapp.sql, as a superuser (the extension).
BEGIN;
-- GeoDjango's PostGIS backend creates the extension when the database is prepared.
CREATE EXTENSION IF NOT EXISTS postgis;

-- 0900 and 0903: Transantiago's periods and the half hours, with their rows.
CREATE TABLE "AndroidRequests_timeperiod" (
    "id" serial NOT NULL PRIMARY KEY,
    "day_type" varchar(8) NOT NULL,
    "name" varchar(30) NOT NULL,
    "initial_time" time NOT NULL,
    "end_time" time NOT NULL
);
CREATE TABLE "AndroidRequests_halfhourperiod" (
    "id" serial NOT NULL PRIMARY KEY,
    "name" varchar(30) NOT NULL,
    "initial_time" time NOT NULL,
    "end_time" time NOT NULL
);
-- Migration 0900's rows in its order. Its 'Nocturno domingo' end time is '05:29:5905:30:00';
-- Django's time parser matches the leading '05:29:59', so that is what its database holds.
INSERT INTO "AndroidRequests_timeperiod" ("day_type", "name", "initial_time", "end_time") VALUES
    ('Laboral', 'Pre nocturno', '00:00:00', '00:59:59'),
    ('Laboral', 'Nocturno', '01:00:00', '05:29:59'),
    ('Laboral', 'Transicion nocturno', '05:30:00', '06:29:59'),
    ('Laboral', 'Punta mañana', '06:30:00', '08:29:59'),
    ('Laboral', 'Transicion punta mañana', '08:30:00', '09:29:59'),
    ('Laboral', 'Fuera de punta mañana', '09:30:00', '12:29:59'),
    ('Laboral', 'Punta mediodia', '12:30:00', '13:59:59'),
    ('Laboral', 'Fuera de punta tarde', '14:00:00', '17:29:59'),
    ('Laboral', 'Punta tarde', '17:30:00', '20:29:59'),
    ('Laboral', 'Transicion punta tarde', '20:30:00', '21:29:59'),
    ('Laboral', 'Fuera de punta nocturno', '21:30:00', '22:59:59'),
    ('Laboral', 'Pre nocturno', '23:00:00', '23:59:59'),
    ('Sábado', 'Pre nocturno sábado', '00:00:00', '00:59:59'),
    ('Sábado', 'Nocturno sábado', '01:00:00', '05:29:59'),
    ('Sábado', 'Transicion sábado mañana', '05:30:00', '06:29:59'),
    ('Sábado', 'Punta mañana sábado', '06:30:00', '10:59:59'),
    ('Sábado', 'Mañana sábado', '11:00:00', '13:29:59'),
    ('Sábado', 'Punta mediodia sábado', '13:30:00', '17:29:59'),
    ('Sábado', 'Tarde sábado', '17:30:00', '20:29:59'),
    ('Sábado', 'Transicion sábado nocturno', '20:30:00', '22:59:59'),
    ('Sábado', 'Pre nocturno sábado', '23:00:00', '23:59:59'),
    ('Domingo', 'Pre nocturno domingo', '00:00:00', '00:59:59'),
    ('Domingo', 'Nocturno domingo', '01:00:00', '05:29:59'),
    ('Domingo', 'Transicion domingo mañana', '05:30:00', '09:29:59'),
    ('Domingo', 'Mañana domingo', '09:30:00', '13:29:59'),
    ('Domingo', 'Mediodia domingo', '13:30:00', '17:29:59'),
    ('Domingo', 'Tarde domingo', '17:30:00', '20:59:59'),
    ('Domingo', 'Transicion domingo', '21:00:00', '22:59:59'),
    ('Domingo', 'Pre nocturno domingo', '23:00:00', '23:59:59');
INSERT INTO "AndroidRequests_halfhourperiod" ("name", "initial_time", "end_time") VALUES
    ('00:00 - 00:29', '00:00:00', '00:29:59'),
    ('00:30 - 00:59', '00:30:00', '00:59:59'),
    ('01:00 - 01:29', '01:00:00', '01:29:59'),
    ('01:30 - 01:59', '01:30:00', '01:59:59'),
    ('02:00 - 02:29', '02:00:00', '02:29:59'),
    ('02:30 - 02:59', '02:30:00', '02:59:59'),
    ('03:00 - 03:29', '03:00:00', '03:29:59'),
    ('03:30 - 03:59', '03:30:00', '03:59:59'),
    ('04:00 - 04:29', '04:00:00', '04:29:59'),
    ('04:30 - 04:59', '04:30:00', '04:59:59'),
    ('05:00 - 05:29', '05:00:00', '05:29:59'),
    ('05:30 - 05:59', '05:30:00', '05:59:59'),
    ('06:00 - 06:29', '06:00:00', '06:29:59'),
    ('06:30 - 06:59', '06:30:00', '06:59:59'),
    ('07:00 - 07:29', '07:00:00', '07:29:59'),
    ('07:30 - 07:59', '07:30:00', '07:59:59'),
    ('08:00 - 08:29', '08:00:00', '08:29:59'),
    ('08:30 - 08:59', '08:30:00', '08:59:59'),
    ('09:00 - 09:29', '09:00:00', '09:29:59'),
    ('09:30 - 09:59', '09:30:00', '09:59:59'),
    ('10:00 - 10:29', '10:00:00', '10:29:59'),
    ('10:30 - 10:59', '10:30:00', '10:59:59'),
    ('11:00 - 11:29', '11:00:00', '11:29:59'),
    ('11:30 - 11:59', '11:30:00', '11:59:59'),
    ('12:00 - 12:29', '12:00:00', '12:29:59'),
    ('12:30 - 12:59', '12:30:00', '12:59:59'),
    ('13:00 - 13:29', '13:00:00', '13:29:59'),
    ('13:30 - 13:59', '13:30:00', '13:59:59'),
    ('14:00 - 14:29', '14:00:00', '14:29:59'),
    ('14:30 - 14:59', '14:30:00', '14:59:59'),
    ('15:00 - 15:29', '15:00:00', '15:29:59'),
    ('15:30 - 15:59', '15:30:00', '15:59:59'),
    ('16:00 - 16:29', '16:00:00', '16:29:59'),
    ('16:30 - 16:59', '16:30:00', '16:59:59'),
    ('17:00 - 17:29', '17:00:00', '17:29:59'),
    ('17:30 - 17:59', '17:30:00', '17:59:59'),
    ('18:00 - 18:29', '18:00:00', '18:29:59'),
    ('18:30 - 18:59', '18:30:00', '18:59:59'),
    ('19:00 - 19:29', '19:00:00', '19:29:59'),
    ('19:30 - 19:59', '19:30:00', '19:59:59'),
    ('20:00 - 20:29', '20:00:00', '20:29:59'),
    ('20:30 - 20:59', '20:30:00', '20:59:59'),
    ('21:00 - 21:29', '21:00:00', '21:29:59'),
    ('21:30 - 21:59', '21:30:00', '21:59:59'),
    ('22:00 - 22:29', '22:00:00', '22:29:59'),
    ('22:30 - 22:59', '22:30:00', '22:59:59'),
    ('23:00 - 23:29', '23:00:00', '23:29:59'),
    ('23:30 - 23:59', '23:30:00', '23:59:59');

-- 0908: the zoning (load777zonification.py fills it from the EOD 2012 shapefile; the test
-- loads that shapefile the same way, see test_cutover.py).
CREATE TABLE "AndroidRequests_zonificationtransantiago" (
    "id" integer NOT NULL PRIMARY KEY,
    "area" double precision NOT NULL,
    "zona" double precision NOT NULL,
    "com" varchar(80) NOT NULL,
    "comuna" varchar(80) NOT NULL,
    "cartodb_id" integer NOT NULL,
    "created_at" date NOT NULL,
    "updated_at" date NOT NULL,
    "comunidad_field" double precision NULL,
    "geom" geometry(MULTIPOLYGON,4326) NOT NULL
);
CREATE INDEX "AndroidRequests_zonificationtransantiago_geom_id" ON "AndroidRequests_zonificationtransantiago" USING GIST ("geom");

-- 0905, 0918 and later: one row per report, derived by TranSappViz's transform.py.
CREATE TABLE "AndroidRequests_reportinfo" (
    "id" serial NOT NULL PRIMARY KEY,
    "reportType" varchar(7) NOT NULL,
    "busUUID" uuid NULL,
    "service" varchar(11) NULL,
    "registrationPlate" varchar(8) NOT NULL,
    "stopCode" varchar(6) NULL,
    "longitude" double precision NOT NULL,
    "latitude" double precision NOT NULL,
    "report_id" integer NOT NULL,
    "zonification_id" integer NULL,
    "transformed" boolean NULL,
    "direction" varchar(1) NULL,
    "userLatitude" double precision NULL,
    "userLongitude" double precision NULL
);

-- The receiver-only columns on TranSapp's replicated tables (09* migrations, AddField).
ALTER TABLE "AndroidRequests_eventforbusstop" ADD COLUMN "timePeriod_id" integer NULL;
ALTER TABLE "AndroidRequests_eventforbusstop" ADD COLUMN "halfHourPeriod_id" integer NULL;
ALTER TABLE "AndroidRequests_eventforbusstop" ADD COLUMN "zonification_id" integer NULL;
ALTER TABLE "AndroidRequests_eventforbusstop" ADD COLUMN "transformed" boolean NULL;
ALTER TABLE "AndroidRequests_eventforbusv2" ADD COLUMN "timePeriod_id" integer NULL;
ALTER TABLE "AndroidRequests_eventforbusv2" ADD COLUMN "halfHourPeriod_id" integer NULL;
ALTER TABLE "AndroidRequests_eventforbusv2" ADD COLUMN "zonification_id" integer NULL;
ALTER TABLE "AndroidRequests_eventforbusv2" ADD COLUMN "busStop1" varchar(6) NULL;
ALTER TABLE "AndroidRequests_eventforbusv2" ADD COLUMN "busStop2" varchar(6) NULL;
ALTER TABLE "AndroidRequests_eventforbusv2" ADD COLUMN "transformed" boolean NULL;
ALTER TABLE "AndroidRequests_eventforbusv2" ADD COLUMN "direction" varchar(1) NULL;
ALTER TABLE "AndroidRequests_busstop" ADD COLUMN "transformed" boolean NULL;
ALTER TABLE "AndroidRequests_busstop" ADD COLUMN "point" geometry(POINT,32140) NULL;
CREATE INDEX "AndroidRequests_busstop_point_id" ON "AndroidRequests_busstop" USING GIST ("point");
ALTER TABLE "AndroidRequests_busv2" ADD COLUMN "transformed" boolean NULL;
ALTER TABLE "AndroidRequests_report" ADD COLUMN "transformed" boolean NULL;

-- Foreign keys and their indexes, named as Django names them.
ALTER TABLE "AndroidRequests_eventforbusstop" ADD CONSTRAINT "AndroidReq_timePeriod_62a25d83_fk_AndroidRequests_timeperiod_id" FOREIGN KEY ("timePeriod_id") REFERENCES "AndroidRequests_timeperiod" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusstop_timePeriod_id_62a25d83" ON "AndroidRequests_eventforbusstop" ("timePeriod_id");
ALTER TABLE "AndroidRequests_eventforbusstop" ADD CONSTRAINT "AndroidR_halfHour_ccc959c0_fk_AndroidRequests_halfhourperiod_id" FOREIGN KEY ("halfHourPeriod_id") REFERENCES "AndroidRequests_halfhourperiod" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusstop_halfHourPeriod_id_ccc959c0" ON "AndroidRequests_eventforbusstop" ("halfHourPeriod_id");
ALTER TABLE "AndroidRequests_eventforbusstop" ADD CONSTRAINT "And_zon_5a2c1cd6_fk_AndroidRequests_zonificationtransantiago_id" FOREIGN KEY ("zonification_id") REFERENCES "AndroidRequests_zonificationtransantiago" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusstop_zonification_id_5a2c1cd6" ON "AndroidRequests_eventforbusstop" ("zonification_id");
ALTER TABLE "AndroidRequests_eventforbusv2" ADD CONSTRAINT "AndroidReq_timePeriod_401c14da_fk_AndroidRequests_timeperiod_id" FOREIGN KEY ("timePeriod_id") REFERENCES "AndroidRequests_timeperiod" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusv2_timePeriod_id_401c14da" ON "AndroidRequests_eventforbusv2" ("timePeriod_id");
ALTER TABLE "AndroidRequests_eventforbusv2" ADD CONSTRAINT "AndroidR_halfHour_bdf6f4e0_fk_AndroidRequests_halfhourperiod_id" FOREIGN KEY ("halfHourPeriod_id") REFERENCES "AndroidRequests_halfhourperiod" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusv2_halfHourPeriod_id_bdf6f4e0" ON "AndroidRequests_eventforbusv2" ("halfHourPeriod_id");
ALTER TABLE "AndroidRequests_eventforbusv2" ADD CONSTRAINT "And_zon_97c5020e_fk_AndroidRequests_zonificationtransantiago_id" FOREIGN KEY ("zonification_id") REFERENCES "AndroidRequests_zonificationtransantiago" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusv2_zonification_id_97c5020e" ON "AndroidRequests_eventforbusv2" ("zonification_id");
ALTER TABLE "AndroidRequests_reportinfo" ADD CONSTRAINT "AndroidReque_report_id_5fdbdbd5_fk_AndroidRequests_report_id" FOREIGN KEY ("report_id") REFERENCES "AndroidRequests_report" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_reportinfo_report_id_5fdbdbd5" ON "AndroidRequests_reportinfo" ("report_id");
ALTER TABLE "AndroidRequests_reportinfo" ADD CONSTRAINT "And_zon_087c5d21_fk_AndroidRequests_zonificationtransantiago_id" FOREIGN KEY ("zonification_id") REFERENCES "AndroidRequests_zonificationtransantiago" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_reportinfo_zonification_id_087c5d21" ON "AndroidRequests_reportinfo" ("zonification_id");
COMMIT;
