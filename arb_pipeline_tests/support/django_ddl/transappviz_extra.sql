-- What the old receiver (TranSappViz, also a Django app) has beyond TranSapp's tables, the
-- way the project's postprocessing reads it today (arb_pipeline/postprocess/: periods.py,
-- zones.py) and the loader's `transformed` column (load/apply.py). Django style as in
-- transapp.sql: NOT NULL without database defaults. Apply after transapp.sql.
BEGIN;
CREATE TABLE "AndroidRequests_timeperiod" (
    "id" serial NOT NULL PRIMARY KEY,
    "dayType" varchar(8) NOT NULL,
    "initialTime" time NOT NULL,
    "endTime" time NOT NULL
);
CREATE TABLE "AndroidRequests_halfhourperiod" (
    "id" serial NOT NULL PRIMARY KEY,
    "initialTime" time NOT NULL,
    "endTime" time NOT NULL
);
CREATE TABLE "AndroidRequests_zonification" (
    "id" serial NOT NULL PRIMARY KEY,
    "comuna" varchar(50) NOT NULL,
    "zona" integer NOT NULL,
    "polygon_wkt" text NOT NULL
);
ALTER TABLE "AndroidRequests_zonification" ADD CONSTRAINT "AndroidRequests_zonification_comuna_zona_6affb54c_uniq" UNIQUE ("comuna", "zona");

-- The derived columns the old postprocessing filled on the replicated event tables.
ALTER TABLE "AndroidRequests_eventforbusstop" ADD COLUMN "transformed" boolean NOT NULL;
ALTER TABLE "AndroidRequests_eventforbusstop" ADD COLUMN "timePeriod_id" integer NULL;
ALTER TABLE "AndroidRequests_eventforbusstop" ADD COLUMN "halfHourPeriod_id" integer NULL;
ALTER TABLE "AndroidRequests_eventforbusstop" ADD COLUMN "zonification_id" integer NULL;
ALTER TABLE "AndroidRequests_eventforbusv2" ADD COLUMN "transformed" boolean NOT NULL;
ALTER TABLE "AndroidRequests_eventforbusv2" ADD COLUMN "timePeriod_id" integer NULL;
ALTER TABLE "AndroidRequests_eventforbusv2" ADD COLUMN "halfHourPeriod_id" integer NULL;
ALTER TABLE "AndroidRequests_eventforbusv2" ADD COLUMN "zonification_id" integer NULL;
ALTER TABLE "AndroidRequests_report" ADD COLUMN "transformed" boolean NOT NULL;
ALTER TABLE "AndroidRequests_report" ADD COLUMN "zonification_id" integer NULL;
ALTER TABLE "AndroidRequests_eventforbusstop" ADD CONSTRAINT "Androi_timePe_62a25d83_fk_AndroidRequests_timeperiod_id" FOREIGN KEY ("timePeriod_id") REFERENCES "AndroidRequests_timeperiod" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusstop_timePeriod_id_62a25d83" ON "AndroidRequests_eventforbusstop" ("timePeriod_id");
ALTER TABLE "AndroidRequests_eventforbusstop" ADD CONSTRAINT "Andro_halfH_ccc959c0_fk_AndroidRequests_halfhourperiod_id" FOREIGN KEY ("halfHourPeriod_id") REFERENCES "AndroidRequests_halfhourperiod" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusstop_halfHourPeriod_id_ccc959c0" ON "AndroidRequests_eventforbusstop" ("halfHourPeriod_id");
ALTER TABLE "AndroidRequests_eventforbusstop" ADD CONSTRAINT "Andro_zonif_5a2c1cd6_fk_AndroidRequests_zonification_id" FOREIGN KEY ("zonification_id") REFERENCES "AndroidRequests_zonification" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusstop_zonification_id_5a2c1cd6" ON "AndroidRequests_eventforbusstop" ("zonification_id");
ALTER TABLE "AndroidRequests_eventforbusv2" ADD CONSTRAINT "Androi_timePe_401c14da_fk_AndroidRequests_timeperiod_id" FOREIGN KEY ("timePeriod_id") REFERENCES "AndroidRequests_timeperiod" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusv2_timePeriod_id_401c14da" ON "AndroidRequests_eventforbusv2" ("timePeriod_id");
ALTER TABLE "AndroidRequests_eventforbusv2" ADD CONSTRAINT "Andro_halfH_bdf6f4e0_fk_AndroidRequests_halfhourperiod_id" FOREIGN KEY ("halfHourPeriod_id") REFERENCES "AndroidRequests_halfhourperiod" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusv2_halfHourPeriod_id_bdf6f4e0" ON "AndroidRequests_eventforbusv2" ("halfHourPeriod_id");
ALTER TABLE "AndroidRequests_eventforbusv2" ADD CONSTRAINT "Andro_zonif_97c5020e_fk_AndroidRequests_zonification_id" FOREIGN KEY ("zonification_id") REFERENCES "AndroidRequests_zonification" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusv2_zonification_id_97c5020e" ON "AndroidRequests_eventforbusv2" ("zonification_id");
ALTER TABLE "AndroidRequests_report" ADD CONSTRAINT "Andro_zonif_2c0ad827_fk_AndroidRequests_zonification_id" FOREIGN KEY ("zonification_id") REFERENCES "AndroidRequests_zonification" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_report_zonification_id_2c0ad827" ON "AndroidRequests_report" ("zonification_id");
COMMIT;
