-- TranSapp's tables as Django's `manage.py migrate` creates them on PostgreSQL: written from
-- /work/shared/transapp-data-model.md, independently of arb_pipeline/schema/, so tests can
-- stand for servers the project did not create. Django's conventions: `serial` ids, no
-- database defaults (a model default lives in Python only), NOT NULL unless null=True,
-- foreign keys added afterwards as named DEFERRABLE constraints, `_like` indexes for
-- varchar keys, `<table>_<cols>_<md5[:8]>` names. Django's own tables come along as noise.
BEGIN;
CREATE TABLE "django_migrations" (
    "id" serial NOT NULL PRIMARY KEY,
    "app" varchar(255) NOT NULL,
    "name" varchar(255) NOT NULL,
    "applied" timestamp with time zone NOT NULL
);
INSERT INTO "django_migrations" ("app", "name", "applied") VALUES
    ('contenttypes', '0001_initial', '2016-03-01 12:00:00+00'),
    ('auth', '0001_initial', '2016-03-01 12:00:01+00'),
    ('AndroidRequests', '0001_initial', '2016-03-01 12:00:02+00'),
    ('AndroidRequests', '0042_auto_20170621_1530', '2017-06-21 15:30:00+00');
CREATE TABLE "django_content_type" (
    "id" serial NOT NULL PRIMARY KEY,
    "app_label" varchar(100) NOT NULL,
    "model" varchar(100) NOT NULL
);
ALTER TABLE "django_content_type" ADD CONSTRAINT "django_content_type_app_label_model_76bd3d3b_uniq" UNIQUE ("app_label", "model");
CREATE TABLE "auth_user" (
    "id" serial NOT NULL PRIMARY KEY,
    "password" varchar(128) NOT NULL,
    "last_login" timestamp with time zone NULL,
    "is_superuser" boolean NOT NULL,
    "username" varchar(150) NOT NULL UNIQUE,
    "first_name" varchar(30) NOT NULL,
    "last_name" varchar(150) NOT NULL,
    "email" varchar(254) NOT NULL,
    "is_staff" boolean NOT NULL,
    "is_active" boolean NOT NULL,
    "date_joined" timestamp with time zone NOT NULL
);
INSERT INTO "auth_user" VALUES (1, '!', NULL, true, 'admin', '', '', 'admin@example.org', true, true, '2016-03-01 12:00:00+00');

CREATE TABLE "AndroidRequests_gtfs" (
    "id" serial NOT NULL PRIMARY KEY,
    "version" varchar(10) NOT NULL UNIQUE,
    "timeCreation" timestamp with time zone NOT NULL
);
CREATE TABLE "AndroidRequests_busstop" (
    "id" serial NOT NULL PRIMARY KEY,
    "longitude" double precision NOT NULL,
    "latitude" double precision NOT NULL,
    "code" varchar(6) NOT NULL,
    "name" varchar(70) NOT NULL,
    "gtfs_id" integer NOT NULL
);
CREATE TABLE "AndroidRequests_service" (
    "id" serial NOT NULL PRIMARY KEY,
    "service" varchar(11) NOT NULL,
    "origin" varchar(100) NOT NULL,
    "destiny" varchar(100) NOT NULL,
    "color" varchar(7) NOT NULL,
    "color_id" integer NOT NULL,
    "gtfs_id" integer NOT NULL
);
CREATE TABLE "AndroidRequests_servicesbybusstop" (
    "id" serial NOT NULL PRIMARY KEY,
    "code" varchar(11) NOT NULL,
    "busStop_id" integer NOT NULL,
    "gtfs_id" integer NOT NULL,
    "service_id" integer NOT NULL
);
CREATE TABLE "AndroidRequests_servicestopdistance" (
    "id" serial NOT NULL PRIMARY KEY,
    "busStop_id" integer NOT NULL,
    "service" varchar(11) NOT NULL,
    "distance" integer NOT NULL,
    "gtfs_id" integer NOT NULL
);
CREATE TABLE "AndroidRequests_route" (
    "id" serial NOT NULL PRIMARY KEY,
    "longitude" double precision NOT NULL,
    "latitude" double precision NOT NULL,
    "serviceCode" varchar(11) NOT NULL,
    "sequence" integer NOT NULL,
    "gtfs_id" integer NOT NULL
);
CREATE TABLE "AndroidRequests_event" (
    "id" varchar(8) NOT NULL PRIMARY KEY,
    "name" varchar(30) NOT NULL,
    "description" varchar(140) NULL,
    "lifespam" integer NOT NULL,
    "category" varchar(20) NOT NULL,
    "origin" varchar(1) NOT NULL,
    "eventType" varchar(7) NOT NULL
);
CREATE TABLE "AndroidRequests_busv2" (
    "id" serial NOT NULL PRIMARY KEY,
    "registrationPlate" varchar(8) NOT NULL,
    "uuid" uuid NOT NULL UNIQUE
);
CREATE TABLE "AndroidRequests_busassignment" (
    "id" serial NOT NULL PRIMARY KEY,
    "service" varchar(11) NOT NULL,
    "uuid_id" integer NOT NULL
);
CREATE TABLE "AndroidRequests_level" (
    "id" serial NOT NULL PRIMARY KEY,
    "name" varchar(50) NOT NULL,
    "minScore" double precision NOT NULL,
    "maxScore" double precision NOT NULL,
    "position" integer NOT NULL UNIQUE
);
CREATE TABLE "AndroidRequests_transappuser" (
    "id" serial NOT NULL PRIMARY KEY,
    "userId" varchar(128) NOT NULL,
    "name" varchar(50) NOT NULL,
    "email" varchar(254) NOT NULL,
    "phoneId" uuid NOT NULL,
    "accountType" varchar(10) NOT NULL,
    "globalScore" double precision NOT NULL,
    "level_id" integer NOT NULL,
    "sessionToken" uuid NOT NULL,
    "nickname" varchar(20) NOT NULL,
    "photoURI" varchar(500) NOT NULL,
    "externalId" uuid NOT NULL UNIQUE,
    "globalPosition" integer NOT NULL,
    "timeCreation" timestamp with time zone NULL
);
CREATE TABLE "AndroidRequests_eventforbusstop" (
    "id" serial NOT NULL PRIMARY KEY,
    "timeStamp" timestamp with time zone NOT NULL,
    "timeCreation" timestamp with time zone NOT NULL,
    "expireTime" timestamp with time zone NULL,
    "event_id" varchar(8) NOT NULL,
    "eventConfirm" integer NOT NULL,
    "eventDecline" integer NOT NULL,
    "phoneId" uuid NOT NULL,
    "broken" boolean NOT NULL,
    "brokenType" varchar(50) NULL,
    "stopCode" varchar(6) NOT NULL,
    "aditionalInfo" varchar(140) NOT NULL
);
CREATE TABLE "AndroidRequests_eventforbusv2" (
    "id" serial NOT NULL PRIMARY KEY,
    "timeStamp" timestamp with time zone NOT NULL,
    "timeCreation" timestamp with time zone NOT NULL,
    "expireTime" timestamp with time zone NULL,
    "event_id" varchar(8) NOT NULL,
    "eventConfirm" integer NOT NULL,
    "eventDecline" integer NOT NULL,
    "phoneId" uuid NOT NULL,
    "broken" boolean NOT NULL,
    "brokenType" varchar(50) NULL,
    "busassignment_id" integer NOT NULL
);
CREATE TABLE "AndroidRequests_stadisticdatafromregistrationbusstop" (
    "id" serial NOT NULL PRIMARY KEY,
    "longitude" double precision NOT NULL,
    "latitude" double precision NOT NULL,
    "timeStamp" timestamp with time zone NOT NULL,
    "confirmDecline" varchar(10) NOT NULL,
    "phoneId" uuid NOT NULL,
    "reportOfEvent_id" integer NOT NULL,
    "tranSappUser_id" integer NULL
);
CREATE TABLE "AndroidRequests_stadisticdatafromregistrationbus" (
    "id" serial NOT NULL PRIMARY KEY,
    "longitude" double precision NOT NULL,
    "latitude" double precision NOT NULL,
    "timeStamp" timestamp with time zone NOT NULL,
    "confirmDecline" varchar(10) NOT NULL,
    "phoneId" uuid NOT NULL,
    "reportOfEvent_id" integer NOT NULL,
    "tranSappUser_id" integer NULL,
    "gpsLongitude" double precision NULL,
    "gpsLatitude" double precision NULL,
    "gpsTimeStamp" timestamp with time zone NULL,
    "distance" double precision NULL
);
CREATE TABLE "AndroidRequests_report" (
    "id" serial NOT NULL PRIMARY KEY,
    "timeStamp" timestamp with time zone NOT NULL,
    "message" text NOT NULL,
    "imageName" varchar(100) NULL,
    "reportInfo" text NOT NULL,
    "phoneId" uuid NOT NULL
);
CREATE TABLE "AndroidRequests_token" (
    "id" serial NOT NULL PRIMARY KEY,
    "token" varchar(128) NOT NULL,
    "busassignment_id" integer NOT NULL,
    "direction" varchar(1) NULL,
    "color" varchar(7) NOT NULL,
    "phoneId" uuid NOT NULL,
    "timeCreation" timestamp with time zone NULL,
    "userEvaluation" integer NULL,
    "tranSappUser_id" integer NULL
);
CREATE TABLE "AndroidRequests_poseintrajectoryoftoken" (
    "id" serial NOT NULL PRIMARY KEY,
    "longitude" double precision NOT NULL,
    "latitude" double precision NOT NULL,
    "timeStamp" timestamp with time zone NOT NULL,
    "inVehicleOrNot" varchar(15) NOT NULL,
    "token_id" integer NOT NULL
);
CREATE TABLE "AndroidRequests_activetoken" (
    "id" serial NOT NULL PRIMARY KEY,
    "timeStamp" timestamp with time zone NOT NULL,
    "token_id" integer NOT NULL UNIQUE
);
CREATE TABLE "AndroidRequests_devicepositionintime" (
    "id" serial NOT NULL PRIMARY KEY,
    "longitude" double precision NOT NULL,
    "latitude" double precision NOT NULL,
    "timeStamp" timestamp with time zone NOT NULL,
    "phoneId" uuid NOT NULL
);
CREATE TABLE "AndroidRequests_nearbybuseslog" (
    "id" serial NOT NULL PRIMARY KEY,
    "timeStamp" timestamp with time zone NOT NULL,
    "busStop_id" integer NOT NULL,
    "phoneId" uuid NOT NULL
);
CREATE TABLE "AndroidRequests_scoreevent" (
    "id" serial NOT NULL PRIMARY KEY,
    "code" varchar(10) NOT NULL UNIQUE,
    "score" double precision NOT NULL
);
CREATE TABLE "AndroidRequests_scorehistory" (
    "id" serial NOT NULL PRIMARY KEY,
    "tranSappUser_id" integer NOT NULL,
    "scoreEvent_id" integer NOT NULL,
    "timeCreation" timestamp with time zone NOT NULL,
    "score" double precision NOT NULL,
    "meta" varchar(10000) NULL
);

ALTER TABLE "AndroidRequests_busstop" ADD CONSTRAINT "AndroidR_gtfs_id_a229cde3_fk_AndroidRequests_gtfs_id" FOREIGN KEY ("gtfs_id") REFERENCES "AndroidRequests_gtfs" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_busstop_gtfs_id_a229cde3" ON "AndroidRequests_busstop" ("gtfs_id");
ALTER TABLE "AndroidRequests_busstop" ADD CONSTRAINT "AndroidRequests_busstop_code_gtfs_id_1798db19_uniq" UNIQUE ("code", "gtfs_id");
ALTER TABLE "AndroidRequests_service" ADD CONSTRAINT "AndroidR_gtfs_id_f02bd52a_fk_AndroidRequests_gtfs_id" FOREIGN KEY ("gtfs_id") REFERENCES "AndroidRequests_gtfs" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_service_gtfs_id_f02bd52a" ON "AndroidRequests_service" ("gtfs_id");
ALTER TABLE "AndroidRequests_service" ADD CONSTRAINT "AndroidRequests_service_service_gtfs_id_cd42e75b_uniq" UNIQUE ("service", "gtfs_id");
ALTER TABLE "AndroidRequests_servicesbybusstop" ADD CONSTRAINT "Android_busStop_b47237cb_fk_AndroidRequests_busstop_id" FOREIGN KEY ("busStop_id") REFERENCES "AndroidRequests_busstop" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_servicesbybusstop_busStop_id_b47237cb" ON "AndroidRequests_servicesbybusstop" ("busStop_id");
ALTER TABLE "AndroidRequests_servicesbybusstop" ADD CONSTRAINT "AndroidR_gtfs_id_46b89236_fk_AndroidRequests_gtfs_id" FOREIGN KEY ("gtfs_id") REFERENCES "AndroidRequests_gtfs" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_servicesbybusstop_gtfs_id_46b89236" ON "AndroidRequests_servicesbybusstop" ("gtfs_id");
ALTER TABLE "AndroidRequests_servicesbybusstop" ADD CONSTRAINT "Android_service_0bd9dfa4_fk_AndroidRequests_service_id" FOREIGN KEY ("service_id") REFERENCES "AndroidRequests_service" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_servicesbybusstop_service_id_0bd9dfa4" ON "AndroidRequests_servicesbybusstop" ("service_id");
ALTER TABLE "AndroidRequests_servicestopdistance" ADD CONSTRAINT "Android_busStop_a01c354a_fk_AndroidRequests_busstop_id" FOREIGN KEY ("busStop_id") REFERENCES "AndroidRequests_busstop" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_servicestopdistance_busStop_id_a01c354a" ON "AndroidRequests_servicestopdistance" ("busStop_id");
ALTER TABLE "AndroidRequests_servicestopdistance" ADD CONSTRAINT "AndroidR_gtfs_id_3b0626b8_fk_AndroidRequests_gtfs_id" FOREIGN KEY ("gtfs_id") REFERENCES "AndroidRequests_gtfs" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_servicestopdistance_gtfs_id_3b0626b8" ON "AndroidRequests_servicestopdistance" ("gtfs_id");
ALTER TABLE "AndroidRequests_route" ADD CONSTRAINT "AndroidR_gtfs_id_c4545bed_fk_AndroidRequests_gtfs_id" FOREIGN KEY ("gtfs_id") REFERENCES "AndroidRequests_gtfs" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_route_gtfs_id_c4545bed" ON "AndroidRequests_route" ("gtfs_id");
CREATE INDEX "AndroidRequests_event_id_3510bca0_like" ON "AndroidRequests_event" ("id" varchar_pattern_ops);
ALTER TABLE "AndroidRequests_busassignment" ADD CONSTRAINT "AndroidR_uuid_id_6b982021_fk_AndroidRequests_busv2_id" FOREIGN KEY ("uuid_id") REFERENCES "AndroidRequests_busv2" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_busassignment_uuid_id_6b982021" ON "AndroidRequests_busassignment" ("uuid_id");
ALTER TABLE "AndroidRequests_busassignment" ADD CONSTRAINT "AndroidRequests_busassignment_uuid_id_service_937982e1_uniq" UNIQUE ("uuid_id", "service");
ALTER TABLE "AndroidRequests_transappuser" ADD CONSTRAINT "AndroidR_level_id_b916fc19_fk_AndroidRequests_level_id" FOREIGN KEY ("level_id") REFERENCES "AndroidRequests_level" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_transappuser_level_id_b916fc19" ON "AndroidRequests_transappuser" ("level_id");
ALTER TABLE "AndroidRequests_eventforbusstop" ADD CONSTRAINT "AndroidR_event_id_6085a562_fk_AndroidRequests_event_id" FOREIGN KEY ("event_id") REFERENCES "AndroidRequests_event" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusstop_event_id_6085a562" ON "AndroidRequests_eventforbusstop" ("event_id");
CREATE INDEX "AndroidRequests_eventforbusstop_event_id_6085a562_like" ON "AndroidRequests_eventforbusstop" ("event_id" varchar_pattern_ops);
CREATE INDEX "AndroidRequests_eventforbusstop_stopCode_9ca1a789" ON "AndroidRequests_eventforbusstop" ("stopCode");
CREATE INDEX "AndroidRequests_eventforbusstop_stopCode_9ca1a789_like" ON "AndroidRequests_eventforbusstop" ("stopCode" varchar_pattern_ops);
ALTER TABLE "AndroidRequests_eventforbusv2" ADD CONSTRAINT "AndroidR_event_id_c0bd09cb_fk_AndroidRequests_event_id" FOREIGN KEY ("event_id") REFERENCES "AndroidRequests_event" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusv2_event_id_c0bd09cb" ON "AndroidRequests_eventforbusv2" ("event_id");
CREATE INDEX "AndroidRequests_eventforbusv2_event_id_c0bd09cb_like" ON "AndroidRequests_eventforbusv2" ("event_id" varchar_pattern_ops);
ALTER TABLE "AndroidRequests_eventforbusv2" ADD CONSTRAINT "Andro_busas_99474eca_fk_AndroidRequests_busassignment_id" FOREIGN KEY ("busassignment_id") REFERENCES "AndroidRequests_busassignment" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_eventforbusv2_busassignment_id_99474eca" ON "AndroidRequests_eventforbusv2" ("busassignment_id");
ALTER TABLE "AndroidRequests_stadisticdatafromregistrationbusstop" ADD CONSTRAINT "Andr_repo_a4fc20a8_fk_AndroidRequests_eventforbusstop_id" FOREIGN KEY ("reportOfEvent_id") REFERENCES "AndroidRequests_eventforbusstop" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_s_reportOfEvent_id_a4fc20a8" ON "AndroidRequests_stadisticdatafromregistrationbusstop" ("reportOfEvent_id");
ALTER TABLE "AndroidRequests_stadisticdatafromregistrationbusstop" ADD CONSTRAINT "Andro_tranS_bed80f59_fk_AndroidRequests_transappuser_id" FOREIGN KEY ("tranSappUser_id") REFERENCES "AndroidRequests_transappuser" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_s_tranSappUser_id_bed80f59" ON "AndroidRequests_stadisticdatafromregistrationbusstop" ("tranSappUser_id");
ALTER TABLE "AndroidRequests_stadisticdatafromregistrationbus" ADD CONSTRAINT "Andro_repor_cbf4ba8c_fk_AndroidRequests_eventforbusv2_id" FOREIGN KEY ("reportOfEvent_id") REFERENCES "AndroidRequests_eventforbusv2" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_s_reportOfEvent_id_cbf4ba8c" ON "AndroidRequests_stadisticdatafromregistrationbus" ("reportOfEvent_id");
ALTER TABLE "AndroidRequests_stadisticdatafromregistrationbus" ADD CONSTRAINT "Andro_tranS_25878363_fk_AndroidRequests_transappuser_id" FOREIGN KEY ("tranSappUser_id") REFERENCES "AndroidRequests_transappuser" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_s_tranSappUser_id_25878363" ON "AndroidRequests_stadisticdatafromregistrationbus" ("tranSappUser_id");
CREATE INDEX "AndroidRequests_report_timeStamp_61735687" ON "AndroidRequests_report" ("timeStamp");
ALTER TABLE "AndroidRequests_token" ADD CONSTRAINT "Andro_busas_aadec73b_fk_AndroidRequests_busassignment_id" FOREIGN KEY ("busassignment_id") REFERENCES "AndroidRequests_busassignment" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_token_busassignment_id_aadec73b" ON "AndroidRequests_token" ("busassignment_id");
ALTER TABLE "AndroidRequests_token" ADD CONSTRAINT "Andro_tranS_89b70d76_fk_AndroidRequests_transappuser_id" FOREIGN KEY ("tranSappUser_id") REFERENCES "AndroidRequests_transappuser" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_token_tranSappUser_id_89b70d76" ON "AndroidRequests_token" ("tranSappUser_id");
CREATE INDEX "AndroidRequests_poseintrajectoryoftoken_timeStamp_9602e7be" ON "AndroidRequests_poseintrajectoryoftoken" ("timeStamp");
ALTER TABLE "AndroidRequests_poseintrajectoryoftoken" ADD CONSTRAINT "AndroidR_token_id_b8b031dc_fk_AndroidRequests_token_id" FOREIGN KEY ("token_id") REFERENCES "AndroidRequests_token" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_poseintrajectoryoftoken_token_id_b8b031dc" ON "AndroidRequests_poseintrajectoryoftoken" ("token_id");
CREATE INDEX "AndroidRequests__token_id_timeSta_5915fe12_idx" ON "AndroidRequests_poseintrajectoryoftoken" ("token_id", "timeStamp");
ALTER TABLE "AndroidRequests_activetoken" ADD CONSTRAINT "AndroidR_token_id_e9010785_fk_AndroidRequests_token_id" FOREIGN KEY ("token_id") REFERENCES "AndroidRequests_token" ("id") DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE "AndroidRequests_nearbybuseslog" ADD CONSTRAINT "Android_busStop_74a79903_fk_AndroidRequests_busstop_id" FOREIGN KEY ("busStop_id") REFERENCES "AndroidRequests_busstop" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_nearbybuseslog_busStop_id_74a79903" ON "AndroidRequests_nearbybuseslog" ("busStop_id");
ALTER TABLE "AndroidRequests_scorehistory" ADD CONSTRAINT "Andro_tranS_daee3156_fk_AndroidRequests_transappuser_id" FOREIGN KEY ("tranSappUser_id") REFERENCES "AndroidRequests_transappuser" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_scorehistory_tranSappUser_id_daee3156" ON "AndroidRequests_scorehistory" ("tranSappUser_id");
ALTER TABLE "AndroidRequests_scorehistory" ADD CONSTRAINT "Androi_scoreE_b8cfc4fa_fk_AndroidRequests_scoreevent_id" FOREIGN KEY ("scoreEvent_id") REFERENCES "AndroidRequests_scoreevent" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_scorehistory_scoreEvent_id_b8cfc4fa" ON "AndroidRequests_scorehistory" ("scoreEvent_id");
COMMIT;
