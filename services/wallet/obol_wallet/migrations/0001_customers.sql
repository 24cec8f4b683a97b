-- Customers of the operator, and the idempotency record of every mutating request.
CREATE TABLE customers (
    customer_id  text PRIMARY KEY,
    external_id  text NOT NULL UNIQUE,
    display_name text NOT NULL DEFAULT '',
    email        text NOT NULL DEFAULT '',
    plan_id      text NOT NULL DEFAULT '',
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- Bumped by every update; exposed as the customer's etag.
    version      bigint NOT NULL DEFAULT 1
);

-- A request_id is bound to the method and a hash of the request: a repeat returns the
-- stored response, a different request under the same id is refused.
CREATE TABLE idempotency_keys (
    request_id   text PRIMARY KEY,
    method       text NOT NULL,
    request_hash bytea NOT NULL,
    response     bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
