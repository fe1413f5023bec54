-- The receiver is a visualization server: it has no use for users' emails or
-- session tokens, and the sender never ships them (catalog exclusions). Without
-- the columns here, nothing can ever be written to them by mistake.
ALTER TABLE "AndroidRequests_transappuser" DROP COLUMN email;
ALTER TABLE "AndroidRequests_transappuser" DROP COLUMN "sessionToken";
