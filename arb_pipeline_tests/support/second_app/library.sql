-- A small Django app that is not TranSapp ("library"), as `manage.py migrate` creates it on
-- PostgreSQL (Django 5.2: library_shelfitem has a CompositePrimaryKey). The same file builds
-- the sender and the receiver; library.toml is its catalog. Django conventions as in
-- ../django_ddl/transapp.sql: no database defaults, named DEFERRABLE foreign keys.
BEGIN;
CREATE TABLE "django_migrations" (
    "id" bigserial NOT NULL PRIMARY KEY,
    "app" varchar(255) NOT NULL,
    "name" varchar(255) NOT NULL,
    "applied" timestamp with time zone NOT NULL
);
INSERT INTO "django_migrations" ("app", "name", "applied") VALUES
    ('library', '0001_initial', '2025-05-01 09:00:00+00'),
    ('library', '0002_shelfitem', '2025-06-01 09:00:00+00');
CREATE TABLE "library_author" (
    "id" serial NOT NULL PRIMARY KEY,
    "name" varchar(100) NOT NULL,
    "born" date NULL
);
CREATE TABLE "library_book" (
    "id" serial NOT NULL PRIMARY KEY,
    "title" varchar(200) NOT NULL,
    "isbn" varchar(13) NOT NULL UNIQUE,
    "cover" varchar(100) NULL,
    "updatedAt" timestamp with time zone NOT NULL,
    "author_id" integer NOT NULL
);
CREATE TABLE "library_loan" (
    "id" serial NOT NULL PRIMARY KEY,
    "reader" varchar(50) NOT NULL,
    "readerEmail" varchar(254) NULL,
    "borrowedAt" timestamp with time zone NOT NULL,
    "returnedAt" timestamp with time zone NULL,
    "updatedAt" timestamp with time zone NOT NULL,
    "book_id" integer NOT NULL
);
CREATE TABLE "library_shelfitem" (
    "shelf" varchar(10) NOT NULL,
    "position" integer NOT NULL,
    "placedAt" timestamp with time zone NOT NULL,
    "book_id" integer NOT NULL,
    PRIMARY KEY ("shelf", "position")
);

CREATE INDEX "library_book_updatedAt_2ae9efcd" ON "library_book" ("updatedAt");
ALTER TABLE "library_book" ADD CONSTRAINT "library_book_author_id_d9a3b67e_fk_library_author_id" FOREIGN KEY ("author_id") REFERENCES "library_author" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "library_book_author_id_d9a3b67e" ON "library_book" ("author_id");
CREATE INDEX "library_loan_updatedAt_4b433d72" ON "library_loan" ("updatedAt");
ALTER TABLE "library_loan" ADD CONSTRAINT "library_loan_book_id_2771127e_fk_library_book_id" FOREIGN KEY ("book_id") REFERENCES "library_book" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "library_loan_book_id_2771127e" ON "library_loan" ("book_id");
CREATE INDEX "library_shelfitem_placedAt_f8c17ec9" ON "library_shelfitem" ("placedAt");
ALTER TABLE "library_shelfitem" ADD CONSTRAINT "library_shelfitem_book_id_2e10a95b_fk_library_book_id" FOREIGN KEY ("book_id") REFERENCES "library_book" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "library_shelfitem_book_id_2e10a95b" ON "library_shelfitem" ("book_id");
COMMIT;
