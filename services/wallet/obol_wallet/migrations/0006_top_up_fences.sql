-- Auto top-up across `obol rebuild` (docs/decisions.md D13).
--
-- Rebuild restores the attempt that auto_topup_attempts holds as pending, and only that
-- one. An attempt that had not been recorded there yet when the hot state was lost (it
-- lived only in Redis: in the wallet hash and on {pN}:topups) was never charged: the
-- top-up worker records an attempt as pending before it calls the payment provider. Such
-- an attempt is void. Rebuild fences the wallet at its ledger sequence, and the worker
-- records an attempt only if no fence at or above the attempt's seq exists: a void
-- attempt is acknowledged without being charged, so it can never be charged next to the
-- one the rebuilt wallet starts instead. Both sides take the wallet's advisory lock
-- (top_up_store.py), so a recording and a rebuild never miss each other.
CREATE TABLE auto_topup_fences (
    wallet_id  text PRIMARY KEY REFERENCES wallets (wallet_id),
    seq        bigint NOT NULL,  -- attempts with seq <= this not recorded by then are void
    fenced_ms  bigint NOT NULL   -- when the last rebuild set it
);
