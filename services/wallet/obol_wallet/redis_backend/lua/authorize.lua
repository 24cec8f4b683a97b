-- authorize.lua: reserve an amount as a new open hold, if the wallet's available covers it.
-- KEYS[10] idempotency record, KEYS[11] the new hold's record {p}:h:<hold>.
-- ARGV[4] request id, [5] request hash, [6] idempotency TTL (s), [7] backlog limit,
-- [8] hold id, [9] amount, [10] hold TTL (ms), [11] memo (JSON).
-- Guarantees: available >= 0 after it (checked and changed in this one atomic call); a
-- frozen wallet is refused; the hold expires by itself at now + TTL.
local K_IDEM, K_HOLD = KEYS[10], KEYS[11]
local RID, HASH, TTL_S = ARGV[4], ARGV[5], ARGV[6]
local HOLD_ID, AMOUNT, HOLD_TTL, MEMO = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]

local early = begin(K_IDEM, HASH, ARGV[7])
if early then
  return early
end
if W.frozen then
  return fail('WALLET_FROZEN')
end
if redis.call('EXISTS', K_HOLD) == 1 then
  return fail('ALREADY_EXISTS', 'resource_type', 'hold', 'resource_id', HOLD_ID)
end
local free = available()
if free < AMOUNT then
  return fail('INSUFFICIENT_FUNDS', 'asset_code', W.asset,
    'available', fmt(free), 'required', fmt(AMOUNT))
end

-- Reserve: held grows, the hold joins the open holds and their expiry order.
local h = {id = HOLD_ID, state = 'open', authorized = AMOUNT, debited = 0, captured = 0,
  expires = NOW + HOLD_TTL, created = NOW, closed = 0, rid = RID}
W.held = W.held + AMOUNT
redis.call('HSET', K_HO, HOLD_ID, hold_pack(h))
redis.call('ZADD', K_HX, fmt(h.expires), HOLD_ID)
due_at(h.expires)
-- The hold's record answers for it once closed; it outlives the expiry by the retention.
redis.call('HSET', K_HOLD, 'w', WALLET_ID, 'state', 'open', 'amount', fmt(AMOUNT),
  'exp', fmt(h.expires), 'created', fmt(NOW), 'rid', RID)
redis.call('PEXPIREAT', K_HOLD, fmt(h.expires + tonumber(TTL_S) * 1000))
hold_touched(h)
add_entry(ENTRY_ID, 'hold', RID, MEMO, {})

return finish('authorize', RID, HASH, K_IDEM, TTL_S, function()
  return result_json({hold = HOLD_ID, amount = fmt(AMOUNT), expires = fmt(h.expires)})
end)
