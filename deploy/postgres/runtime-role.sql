-- The privileges Obol's services need at run time, for a database role of their own
-- (`obol_runtime` here: rename it to taste) that owns nothing and can change no schema:
-- read and write the rows of the services' tables, and nothing else. No CREATE, ALTER,
-- DROP or TRUNCATE; the ledger tables stay append-only whoever connects (their triggers
-- refuse UPDATE and DELETE). Run it as the role that owns the schemas (the one `obol
-- migrate` runs as), after `obol migrate`; the default privileges cover the tables that
-- later migrations create. Then give the services this role's DATABASE_URL and
-- OBOL_MIGRATIONS=verify, and keep the owner's URL for `obol migrate` alone.
-- Create the role itself first (with your password policy), e.g.
--   CREATE ROLE obol_runtime LOGIN PASSWORD '...';
-- Tested: tests/e2e/test_runtime_role.py runs every service and the write-behind as it.
GRANT USAGE ON SCHEMA wallet, pricing, costs TO obol_runtime;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA wallet, pricing, costs
    TO obol_runtime;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA wallet, pricing, costs TO obol_runtime;
ALTER DEFAULT PRIVILEGES IN SCHEMA wallet, pricing, costs
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO obol_runtime;
ALTER DEFAULT PRIVILEGES IN SCHEMA wallet, pricing, costs
    GRANT USAGE, SELECT ON SEQUENCES TO obol_runtime;
