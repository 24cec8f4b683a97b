-- Meters declare the usage event types Obol prices, and the quantity/dimension keys they carry.
CREATE TABLE meters (
    meter_id       text PRIMARY KEY,
    product_id     text NOT NULL DEFAULT '',
    event_type     text NOT NULL UNIQUE,
    display_name   text NOT NULL DEFAULT '',
    description    text NOT NULL DEFAULT '',
    quantity_keys  text[] NOT NULL DEFAULT '{}',
    dimension_keys text[] NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- See obol_core.idempotency.
CREATE TABLE idempotency_keys (
    request_id   text PRIMARY KEY,
    method       text NOT NULL,
    request_hash bytea NOT NULL,
    response     bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
