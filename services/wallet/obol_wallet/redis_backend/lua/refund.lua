-- refund.lua: give back part of a purchased grant's remaining (lines grant ->
-- topup_clearing).
-- KEYS[10] idempotency record.
-- ARGV[4] request id, [5] request hash, [6] idempotency TTL (s), [7] grant id, [8] amount,
-- [9] memo (JSON).
-- Guarantees: only purchased grants; amount <= remaining; an active grant's refund must
-- also fit in available (funds reserved by open holds are not refunded).
need_grants()
local K_IDEM = KEYS[10]
local RID, HASH, TTL_S = ARGV[4], ARGV[5], ARGV[6]
local GRANT_ID, AMOUNT, MEMO = ARGV[7], tonumber(ARGV[8]), ARGV[9]

local early = begin(K_IDEM, HASH, nil)
if early then
  return early
end
local g = grant_get(GRANT_ID)
if not g then
  return fail('UNKNOWN_GRANT')
end
if g.kind ~= 'purchased' then
  return fail('GRANT_NOT_REFUNDABLE', 'kind', g.kind)
end
if AMOUNT > g.remaining then
  return fail('REFUND_EXCEEDS_REMAINING', 'remaining', fmt(g.remaining), 'required', fmt(AMOUNT))
end
local active = g.effective <= NOW -- settle() has activated every grant due by now
if active then
  local free = available()
  if free < AMOUNT then
    return fail('INSUFFICIENT_FUNDS', 'asset_code', W.asset,
      'available', fmt(free), 'required', fmt(AMOUNT))
  end
  W.active = W.active - AMOUNT
end

g.remaining = g.remaining - AMOUNT
g.refunded = g.refunded + AMOUNT
grant_touched(g)
if g.remaining > 0 then
  grant_save(g)
else
  grant_remove(g)
  redis.call('ZREM', K_GP, GRANT_ID)
end
add_entry(ENTRY_ID, 'refund', RID, MEMO, {line(grant_account(GRANT_ID), -AMOUNT),
  line('topup_clearing:' .. W.asset, AMOUNT)})

return finish('refund', RID, HASH, K_IDEM, TTL_S, function()
  return result_json({})
end)
