-- Included by receiver-role.sql and sender-role.sql (psql \ir) once the role has its grants:
-- the role must have no power beyond them, by attribute or by membership.
SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls AS too_powerful,
       EXISTS (SELECT FROM pg_auth_members m WHERE m.member = r.oid) AS is_member
FROM pg_roles r WHERE rolname = :'role' \gset
\if :too_powerful
  DO $$ BEGIN RAISE EXCEPTION 'the role still has SUPERUSER, CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS: run this script as a superuser'; END $$;
\endif
\if :is_member
  DO $$ BEGIN RAISE EXCEPTION 'the role is a member of other roles and could use their rights: REVOKE those memberships'; END $$;
\endif
