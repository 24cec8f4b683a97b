-- Support for the Postgres backend, the write-behind worker and the ledger read side.

-- A grant whose effective time had not come when it was last written: its remaining is
-- not in wallets.active yet. The Postgres backend activates it when settling time; the
-- write-behind sets it from the stream message's time.
ALTER TABLE grants ADD COLUMN pending boolean NOT NULL DEFAULT false;

-- Settle-time work lists: grants to activate, grants to expire (PostgresBackend.sweep and
-- the lazy settle at the start of every operation).
CREATE INDEX grants_pending_effective ON grants (effective_ms) WHERE pending;
CREATE INDEX grants_live_expiry ON grants (expires_ms) WHERE NOT expired AND expires_ms > 0;

-- ListTransactions: newest first (keyset on occurred_ms, entry_id), by wallet or by hold.
CREATE INDEX ledger_entries_time ON ledger_entries (occurred_ms DESC, entry_id DESC);
CREATE INDEX ledger_entries_hold ON ledger_entries ((memo ->> 'hold_id'))
    WHERE memo ? 'hold_id';

-- Idempotency records are handed to `obol rebuild` by age.
CREATE INDEX wallet_requests_created ON wallet_requests (created_ms);
