-- The TranSapp (AndroidRequests) tables as Django creates them: quoted mixed-case
-- names, serial ids, timestamptz, FK constraints DEFERRABLE INITIALLY DEFERRED.
-- Applied on both servers; the receiver then drops the personal columns (receiver/0002).

CREATE TABLE "AndroidRequests_gtfs" (
    id serial PRIMARY KEY,
    version varchar(10) NOT NULL UNIQUE,
    "timeCreation" timestamptz NOT NULL
);

CREATE TABLE "AndroidRequests_busstop" (
    id serial PRIMARY KEY,
    longitude double precision NOT NULL,
    latitude double precision NOT NULL,
    code varchar(6) NOT NULL,
    name varchar(70) NOT NULL,
    gtfs_id integer NOT NULL REFERENCES "AndroidRequests_gtfs"(id) DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (code, gtfs_id)
);

CREATE TABLE "AndroidRequests_service" (
    id serial PRIMARY KEY,
    service varchar(11) NOT NULL,
    origin varchar(100) NOT NULL,
    destiny varchar(100) NOT NULL,
    color varchar(7) NOT NULL DEFAULT '#00a0f0',
    color_id integer NOT NULL DEFAULT 0,
    gtfs_id integer NOT NULL REFERENCES "AndroidRequests_gtfs"(id) DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (service, gtfs_id)
);

CREATE TABLE "AndroidRequests_servicesbybusstop" (
    id serial PRIMARY KEY,
    code varchar(11) NOT NULL,
    "busStop_id" integer NOT NULL REFERENCES "AndroidRequests_busstop"(id) DEFERRABLE INITIALLY DEFERRED,
    service_id integer NOT NULL REFERENCES "AndroidRequests_service"(id) DEFERRABLE INITIALLY DEFERRED,
    gtfs_id integer NOT NULL REFERENCES "AndroidRequests_gtfs"(id) DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (code, "busStop_id", gtfs_id)
);

CREATE TABLE "AndroidRequests_servicestopdistance" (
    id serial PRIMARY KEY,
    "busStop_id" integer NOT NULL REFERENCES "AndroidRequests_busstop"(id) DEFERRABLE INITIALLY DEFERRED,
    service varchar(11) NOT NULL,
    distance integer NOT NULL,
    gtfs_id integer NOT NULL REFERENCES "AndroidRequests_gtfs"(id) DEFERRABLE INITIALLY DEFERRED,
    UNIQUE ("busStop_id", service, gtfs_id)
);

CREATE TABLE "AndroidRequests_route" (
    id serial PRIMARY KEY,
    longitude double precision NOT NULL,
    latitude double precision NOT NULL,
    "serviceCode" varchar(11) NOT NULL,
    sequence integer NOT NULL,
    gtfs_id integer NOT NULL REFERENCES "AndroidRequests_gtfs"(id) DEFERRABLE INITIALLY DEFERRED,
    UNIQUE ("serviceCode", sequence, gtfs_id)
);

CREATE TABLE "AndroidRequests_event" (
    id varchar(8) PRIMARY KEY,
    name varchar(30) NOT NULL,
    description varchar(140),
    lifespam integer NOT NULL DEFAULT 30,
    category varchar(20) NOT NULL,
    origin char(1) NOT NULL,
    "eventType" varchar(7) NOT NULL
);

CREATE TABLE "AndroidRequests_busv2" (
    id serial PRIMARY KEY,
    "registrationPlate" varchar(8) NOT NULL,
    uuid uuid NOT NULL UNIQUE
);

CREATE TABLE "AndroidRequests_busassignment" (
    id serial PRIMARY KEY,
    service varchar(11) NOT NULL,
    uuid_id integer NOT NULL REFERENCES "AndroidRequests_busv2"(id) DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (uuid_id, service)
);

CREATE TABLE "AndroidRequests_level" (
    id serial PRIMARY KEY,
    name varchar(50) NOT NULL,
    "minScore" double precision NOT NULL,
    "maxScore" double precision NOT NULL,
    position integer NOT NULL UNIQUE
);

CREATE TABLE "AndroidRequests_transappuser" (
    id serial PRIMARY KEY,
    "userId" varchar(128) NOT NULL,
    name varchar(50) NOT NULL,
    email varchar(254) NOT NULL,
    "phoneId" uuid NOT NULL,
    "accountType" varchar(10) NOT NULL,
    "globalScore" double precision NOT NULL DEFAULT 0,
    level_id integer NOT NULL REFERENCES "AndroidRequests_level"(id) DEFERRABLE INITIALLY DEFERRED,
    "sessionToken" uuid NOT NULL,
    nickname varchar(20) NOT NULL,
    "photoURI" varchar(200) NOT NULL,
    "externalId" uuid NOT NULL UNIQUE,
    "globalPosition" integer NOT NULL DEFAULT 0,
    "timeCreation" timestamptz NOT NULL
);

CREATE TABLE "AndroidRequests_eventforbusstop" (
    id serial PRIMARY KEY,
    "timeStamp" timestamptz NOT NULL,
    "timeCreation" timestamptz NOT NULL,
    "expireTime" timestamptz,
    event_id varchar(8) NOT NULL REFERENCES "AndroidRequests_event"(id) DEFERRABLE INITIALLY DEFERRED,
    "eventConfirm" integer NOT NULL DEFAULT 1,
    "eventDecline" integer NOT NULL DEFAULT 0,
    "phoneId" uuid NOT NULL,
    broken boolean NOT NULL DEFAULT false,
    "brokenType" varchar(50),
    "stopCode" varchar(6) NOT NULL,
    "aditionalInfo" varchar(140) NOT NULL DEFAULT 'nothing'
);
CREATE INDEX ON "AndroidRequests_eventforbusstop" ("stopCode");
CREATE INDEX ON "AndroidRequests_eventforbusstop" ("timeStamp");

CREATE TABLE "AndroidRequests_eventforbusv2" (
    id serial PRIMARY KEY,
    "timeStamp" timestamptz NOT NULL,
    "timeCreation" timestamptz NOT NULL,
    "expireTime" timestamptz,
    event_id varchar(8) NOT NULL REFERENCES "AndroidRequests_event"(id) DEFERRABLE INITIALLY DEFERRED,
    "eventConfirm" integer NOT NULL DEFAULT 1,
    "eventDecline" integer NOT NULL DEFAULT 0,
    "phoneId" uuid NOT NULL,
    broken boolean NOT NULL DEFAULT false,
    "brokenType" varchar(50),
    busassignment_id integer NOT NULL REFERENCES "AndroidRequests_busassignment"(id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX ON "AndroidRequests_eventforbusv2" ("timeStamp");
CREATE INDEX ON "AndroidRequests_eventforbusv2" (busassignment_id);

CREATE TABLE "AndroidRequests_stadisticdatafromregistrationbusstop" (
    id serial PRIMARY KEY,
    longitude double precision NOT NULL,
    latitude double precision NOT NULL,
    "timeStamp" timestamptz NOT NULL,
    "confirmDecline" varchar(10) NOT NULL,
    "phoneId" uuid NOT NULL,
    "reportOfEvent_id" integer NOT NULL REFERENCES "AndroidRequests_eventforbusstop"(id) DEFERRABLE INITIALLY DEFERRED,
    "tranSappUser_id" integer REFERENCES "AndroidRequests_transappuser"(id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX ON "AndroidRequests_stadisticdatafromregistrationbusstop" ("timeStamp");
CREATE INDEX ON "AndroidRequests_stadisticdatafromregistrationbusstop" ("reportOfEvent_id");

CREATE TABLE "AndroidRequests_stadisticdatafromregistrationbus" (
    id serial PRIMARY KEY,
    longitude double precision NOT NULL,
    latitude double precision NOT NULL,
    "timeStamp" timestamptz NOT NULL,
    "confirmDecline" varchar(10) NOT NULL,
    "phoneId" uuid NOT NULL,
    "reportOfEvent_id" integer NOT NULL REFERENCES "AndroidRequests_eventforbusv2"(id) DEFERRABLE INITIALLY DEFERRED,
    "tranSappUser_id" integer REFERENCES "AndroidRequests_transappuser"(id) DEFERRABLE INITIALLY DEFERRED,
    "gpsLongitude" double precision,
    "gpsLatitude" double precision,
    "gpsTimeStamp" timestamptz,
    distance double precision
);
CREATE INDEX ON "AndroidRequests_stadisticdatafromregistrationbus" ("timeStamp");
CREATE INDEX ON "AndroidRequests_stadisticdatafromregistrationbus" ("reportOfEvent_id");

CREATE TABLE "AndroidRequests_report" (
    id serial PRIMARY KEY,
    "timeStamp" timestamptz NOT NULL,
    message text NOT NULL,
    "imageName" varchar(100),
    "reportInfo" text NOT NULL,
    "phoneId" uuid NOT NULL
);
CREATE INDEX ON "AndroidRequests_report" ("timeStamp");

CREATE TABLE "AndroidRequests_token" (
    id serial PRIMARY KEY,
    token varchar(128) NOT NULL,
    busassignment_id integer NOT NULL REFERENCES "AndroidRequests_busassignment"(id) DEFERRABLE INITIALLY DEFERRED,
    direction char(1),
    color varchar(7) NOT NULL,
    "phoneId" uuid NOT NULL,
    "timeCreation" timestamptz,
    "userEvaluation" integer,
    "tranSappUser_id" integer REFERENCES "AndroidRequests_transappuser"(id) DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE "AndroidRequests_poseintrajectoryoftoken" (
    id serial PRIMARY KEY,
    longitude double precision NOT NULL,
    latitude double precision NOT NULL,
    "timeStamp" timestamptz NOT NULL,
    "inVehicleOrNot" varchar(15) NOT NULL,
    token_id integer NOT NULL REFERENCES "AndroidRequests_token"(id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX ON "AndroidRequests_poseintrajectoryoftoken" ("timeStamp");
CREATE INDEX ON "AndroidRequests_poseintrajectoryoftoken" (token_id, "timeStamp");

CREATE TABLE "AndroidRequests_activetoken" (
    id serial PRIMARY KEY,
    "timeStamp" timestamptz NOT NULL,
    token_id integer NOT NULL UNIQUE REFERENCES "AndroidRequests_token"(id) DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE "AndroidRequests_devicepositionintime" (
    id serial PRIMARY KEY,
    longitude double precision NOT NULL,
    latitude double precision NOT NULL,
    "timeStamp" timestamptz NOT NULL,
    "phoneId" uuid NOT NULL
);
CREATE INDEX ON "AndroidRequests_devicepositionintime" ("timeStamp");

CREATE TABLE "AndroidRequests_nearbybuseslog" (
    id serial PRIMARY KEY,
    "timeStamp" timestamptz NOT NULL,
    "busStop_id" integer NOT NULL REFERENCES "AndroidRequests_busstop"(id) DEFERRABLE INITIALLY DEFERRED,
    "phoneId" uuid NOT NULL
);

CREATE TABLE "AndroidRequests_scoreevent" (
    id serial PRIMARY KEY,
    code varchar(10) NOT NULL UNIQUE,
    score double precision NOT NULL
);

CREATE TABLE "AndroidRequests_scorehistory" (
    id serial PRIMARY KEY,
    "tranSappUser_id" integer NOT NULL REFERENCES "AndroidRequests_transappuser"(id) DEFERRABLE INITIALLY DEFERRED,
    "scoreEvent_id" integer NOT NULL REFERENCES "AndroidRequests_scoreevent"(id) DEFERRABLE INITIALLY DEFERRED,
    "timeCreation" timestamptz NOT NULL,
    score double precision NOT NULL,
    meta varchar(10000)
);
