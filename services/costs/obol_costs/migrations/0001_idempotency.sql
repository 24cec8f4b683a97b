-- See obol_core.idempotency. Rate cards, cost events and rollups arrive with the costs issue.
CREATE TABLE idempotency_keys (
    request_id   text PRIMARY KEY,
    method       text NOT NULL,
    request_hash bytea NOT NULL,
    response     bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
