-- Streaming debit: each debit pushes an open hold's expiry to now + its TTL, and
-- ExtendHold sets a new TTL, so a hold keeps its TTL. Holds written before this migration
-- get the one they were authorized with.
ALTER TABLE holds ADD COLUMN ttl_ms bigint NOT NULL DEFAULT 0;
UPDATE holds SET ttl_ms = expires_ms - created_ms;
