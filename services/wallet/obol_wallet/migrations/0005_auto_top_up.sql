-- Auto top-up (docs/wallet.md "Auto top-up"): one rule per wallet, its attempts, and the
-- wallets' typed events (balance alerts, top-up outcomes).

-- A wallet's rule as the operator set it, with its live status. The Postgres backend
-- reads it in every spend's transaction (under the wallet's row lock); the Redis backend
-- mirrors it into the wallet's hash (newer `version` only) and the top-up worker copies
-- the status back. Delete keeps the row (deleted, disabled) so `version` keeps growing.
CREATE TABLE auto_topup_rules (
    wallet_id            text PRIMARY KEY REFERENCES wallets (wallet_id),
    threshold            bigint NOT NULL CHECK (threshold >= 0),
    amount               bigint NOT NULL CHECK (amount >= 0),     -- per top-up; 0: top_up_to
    top_up_to            bigint NOT NULL CHECK (top_up_to >= 0),  -- target; 0: amount
    payment_method_id    text NOT NULL,
    max_failures         integer NOT NULL CHECK (max_failures > 0),
    enabled              boolean NOT NULL,
    disabled_reason      text NOT NULL DEFAULT ''
        CHECK (disabled_reason IN ('', 'operator', 'too_many_failures', 'payment_method_invalid')),
    disabled_message     text NOT NULL DEFAULT '',
    consecutive_failures integer NOT NULL DEFAULT 0,
    -- No attempt starts before this (a retry's backoff); the worker looks at the wallet
    -- then. 0: nothing scheduled, a spend below the threshold starts one at once.
    next_attempt_ms      bigint NOT NULL DEFAULT 0,
    deleted              boolean NOT NULL DEFAULT false,
    version              bigint NOT NULL DEFAULT 1,
    created_ms           bigint NOT NULL,
    updated_ms           bigint NOT NULL,
    CHECK ((amount > 0) <> (top_up_to > 0))
);
CREATE INDEX auto_topup_rules_due ON auto_topup_rules (next_attempt_ms)
    WHERE enabled AND next_attempt_ms > 0;

-- One row per attempt: '<wallet>:<seq>', seq being the wallet's ledger sequence of the
-- entry that started it (never reused). The Postgres backend inserts it in the spend's
-- transaction and its worker claims it with FOR UPDATE SKIP LOCKED and a lease; the Redis
-- backend's worker records it when it takes the attempt from `{pN}:topups`.
CREATE TABLE auto_topup_attempts (
    attempt_id        text PRIMARY KEY,
    wallet_id         text NOT NULL REFERENCES wallets (wallet_id),
    seq               bigint NOT NULL,
    amount            bigint NOT NULL CHECK (amount > 0),
    payment_method_id text NOT NULL,
    state             text NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
    error             text NOT NULL DEFAULT '',
    grant_id          text NOT NULL DEFAULT '',
    created_ms        bigint NOT NULL,
    finished_ms       bigint,
    claimed_until_ms  bigint NOT NULL DEFAULT 0
);
CREATE INDEX auto_topup_attempts_wallet ON auto_topup_attempts (wallet_id, seq DESC);
CREATE INDEX auto_topup_attempts_queue ON auto_topup_attempts (created_ms)
    WHERE state = 'pending';
-- Exactly one attempt at a time per wallet.
CREATE UNIQUE INDEX auto_topup_attempts_one_pending ON auto_topup_attempts (wallet_id)
    WHERE state = 'pending';

-- Typed wallet events (alerts). event_id is derived from what caused the event, so a
-- replayed source never records it twice.
CREATE TABLE wallet_events (
    event_id    text PRIMARY KEY,
    wallet_id   text NOT NULL REFERENCES wallets (wallet_id),
    kind        text NOT NULL CHECK (kind IN ('low_balance', 'depleted', 'auto_top_up_succeeded',
                                              'auto_top_up_failed', 'auto_top_up_disabled')),
    occurred_ms bigint NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_events_wallet_time ON wallet_events (wallet_id, occurred_ms);
