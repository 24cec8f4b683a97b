-- grant.lua: add a grant (credit bucket) to the wallet.
-- KEYS[10] idempotency record, KEYS[11], KEYS[12] {p}:topups, {p}:topup_due (top_up.lua).
-- ARGV[4] request id, [5] request hash, [6] idempotency TTL (s), [7] backlog limit,
-- [8] grant id, [9] kind, [10] amount, [11] priority, [12] effective (ms),
-- [13] expires (ms, 0: never), [14] memo (JSON), [15] the auto top-up attempt it pays out
-- ('': none; it stops being pending in this same call).
-- Ledger: one entry (top_up for purchased, grant otherwise), source account -> grant. A
-- grant effective now first repays overdraft used: the same entry also moves that part
-- grant -> overdraft. A future grant waits in gp and does so when it activates.
-- Guarantees: active + pending + overdraft limit stays <= 2^53 - 1 (AMOUNT_OUT_OF_RANGE),
-- so every total and available is exact.
need_grants()
need_top_up()
local K_IDEM = KEYS[10]
local RID, HASH, TTL_S = ARGV[4], ARGV[5], ARGV[6]
local GRANT_ID, KIND, AMOUNT = ARGV[8], ARGV[9], tonumber(ARGV[10])
local PRIORITY, EFFECTIVE, EXPIRES = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local MEMO, TOP_UP_ATTEMPT = ARGV[14], ARGV[15]
-- Where each kind of grant's money comes from (rollover credits are included credits).
local SOURCE = {purchased = 'topup_clearing:', included = 'included:',
  promotional = 'promotions:', rollover = 'included:', adjustment = 'adjustments:'}

local early = begin(K_IDEM, HASH, ARGV[7])
if early then
  return early
end
if EXPIRES ~= 0 and EXPIRES <= NOW then
  return fail('GRANT_EXPIRED', 'expires_ms', fmt(EXPIRES))
end
if redis.call('HEXISTS', K_G, GRANT_ID) == 1 then
  return fail('ALREADY_EXISTS', 'resource_type', 'grant', 'resource_id', GRANT_ID)
end
local total = W.active + pending_total() + W.limit
if AMOUNT > MAX - total then
  return fail('AMOUNT_OUT_OF_RANGE', 'total', fmt(total), 'required', fmt(AMOUNT),
    'limit', fmt(MAX))
end

local g = {id = GRANT_ID, remaining = AMOUNT, amount = AMOUNT, priority = PRIORITY,
  effective = EFFECTIVE, expires = EXPIRES, kind = KIND, created = NOW, refunded = 0,
  expired = false}
local lines = {line(SOURCE[KIND] .. W.asset, -AMOUNT), line(grant_account(GRANT_ID), AMOUNT)}
grant_touched(g)
if EFFECTIVE <= NOW then
  grant_activate(g, lines)
else
  grant_save(g)
  redis.call('ZADD', K_GP, fmt(EFFECTIVE), GRANT_ID)
  due_at(EFFECTIVE)
end
local kind = 'grant'
if KIND == 'purchased' then
  kind = 'top_up'
end
add_entry(ENTRY_ID, kind, RID, MEMO, lines)
if TOP_UP_ATTEMPT ~= '' then
  top_up_paid(TOP_UP_ATTEMPT, GRANT_ID, AMOUNT)
end

return finish('grant', RID, HASH, K_IDEM, TTL_S, function()
  return result_json({grant = GRANT_ID})
end)
