-- Assets, wallets, grants, holds and the double-entry ledger (see docs/wallet.md).
-- Money columns are bigint atomic units; times of the hot path are epoch milliseconds.

CREATE TABLE assets (
    asset_code        text PRIMARY KEY,
    kind              text NOT NULL CHECK (kind IN ('currency', 'custom_unit')),
    display_name      text NOT NULL DEFAULT '',
    decimals          integer NOT NULL CHECK (decimals BETWEEN 0 AND 18),
    display_decimals  integer NOT NULL DEFAULT 2,
    symbol            text NOT NULL DEFAULT '',
    -- custom units: `exchange_amount` atomic units of `exchange_asset` buy
    -- `exchange_per_quantity` atomic units of this asset.
    exchange_asset        text,
    exchange_amount       bigint,
    exchange_per_quantity bigint,
    exchange_rounding     text,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE wallets (
    wallet_id        text PRIMARY KEY,
    customer_id      text NOT NULL REFERENCES customers (customer_id),
    asset_code       text NOT NULL REFERENCES assets (asset_code),
    partition        integer NOT NULL,
    overdraft_limit  bigint NOT NULL DEFAULT 0 CHECK (overdraft_limit >= 0),
    frozen           boolean NOT NULL DEFAULT false,
    -- Hot counters as last written behind (Redis backend) or kept in place (Postgres
    -- backend). `version` only ever grows: a write-behind applies a row only if newer.
    active           bigint NOT NULL DEFAULT 0,
    overdraft_used   bigint NOT NULL DEFAULT 0 CHECK (overdraft_used <= 0),
    held             bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
    seq              bigint NOT NULL DEFAULT 0,
    version          bigint NOT NULL DEFAULT 0,
    -- Hash of the wallet's last ledger entry in Postgres (the chain head).
    chain_head       bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    chain_seq        bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (customer_id, asset_code)
);

CREATE TABLE grants (
    grant_id        text PRIMARY KEY,
    wallet_id       text NOT NULL REFERENCES wallets (wallet_id),
    kind            text NOT NULL,
    priority        integer NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    remaining       bigint NOT NULL CHECK (remaining >= 0),
    refunded        bigint NOT NULL DEFAULT 0 CHECK (refunded >= 0),
    effective_ms    bigint NOT NULL,
    expires_ms      bigint NOT NULL DEFAULT 0,  -- 0: never
    created_ms      bigint NOT NULL,
    expired         boolean NOT NULL DEFAULT false,
    external_id     text,
    payment_reference text NOT NULL DEFAULT '',
    description     text NOT NULL DEFAULT '',
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    version         bigint NOT NULL DEFAULT 0,
    UNIQUE (wallet_id, external_id)
);
CREATE INDEX grants_wallet ON grants (wallet_id);

CREATE TABLE holds (
    hold_id      text PRIMARY KEY,
    wallet_id    text NOT NULL REFERENCES wallets (wallet_id),
    state        text NOT NULL CHECK (state IN ('open', 'captured', 'voided', 'expired')),
    authorized   bigint NOT NULL CHECK (authorized >= 0),
    debited      bigint NOT NULL DEFAULT 0,
    captured     bigint NOT NULL DEFAULT 0,
    expires_ms   bigint NOT NULL,
    created_ms   bigint NOT NULL,
    closed_ms    bigint,
    request_id   text NOT NULL DEFAULT '',
    version      bigint NOT NULL DEFAULT 0
);
CREATE INDEX holds_wallet_open ON holds (wallet_id) WHERE state = 'open';
CREATE INDEX holds_open_expiry ON holds (expires_ms) WHERE state = 'open';

-- The ledger: append-only. Corrections are new entries, never edits.
CREATE TABLE ledger_entries (
    entry_id     text PRIMARY KEY,
    wallet_id    text NOT NULL REFERENCES wallets (wallet_id),
    seq          bigint NOT NULL,
    kind         text NOT NULL,
    request_id   text NOT NULL DEFAULT '',
    occurred_ms  bigint NOT NULL,
    memo         jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash    bytea NOT NULL,  -- 32 zero bytes for a wallet's first entry
    hash         bytea NOT NULL,  -- sha256(prev_hash || canonical entry), see ledger_hash.py
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (wallet_id, seq)
);
CREATE INDEX ledger_entries_wallet_time ON ledger_entries (wallet_id, occurred_ms);

CREATE TABLE ledger_lines (
    entry_id    text NOT NULL REFERENCES ledger_entries (entry_id),
    line_no     integer NOT NULL,
    account     text NOT NULL,
    asset_code  text NOT NULL,
    amount      bigint NOT NULL,
    PRIMARY KEY (entry_id, line_no)
);
CREATE INDEX ledger_lines_account ON ledger_lines (account);

CREATE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_lines_append_only BEFORE UPDATE OR DELETE ON ledger_lines
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();

-- Idempotency records of hot-path mutations (both backends), keyed per wallet because a
-- hot-path request_id is scoped to the wallet it names (see docs/wallet.md).
CREATE TABLE wallet_requests (
    wallet_id    text NOT NULL,
    request_id   text NOT NULL,
    request_hash text NOT NULL,
    result       text NOT NULL,
    created_ms   bigint NOT NULL,
    PRIMARY KEY (wallet_id, request_id)
);
