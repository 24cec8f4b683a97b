-- authorize.lua: reserve an amount as a new open hold, if the wallet's available covers it.
-- KEYS[10] idempotency record, KEYS[11] the new hold's record {p}:h:<hold>,
-- KEYS[12], KEYS[13] {p}:topups, {p}:topup_due (top_up.lua).
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
-- Also the "before" of the auto top-up check at the end (top_up.lua).
local before = available()
if W.frozen then
  return fail('WALLET_FROZEN')
end
if before < AMOUNT then
  return fail('INSUFFICIENT_FUNDS', 'asset_code', W.asset,
    'available', fmt(before), 'required', fmt(AMOUNT))
end

local h = {id = HOLD_ID, state = 'open', authorized = AMOUNT, debited = 0, captured = 0,
  expires = NOW + HOLD_TTL, created = NOW, closed = 0, ttl = HOLD_TTL, rid = RID}
local record = hold_pack(h)
-- The hold's own record first: NX refuses a reused hold id before anything changed; it
-- outlives the hold's expiry by the retention.
local keep_until = fmt(h.expires + tonumber(TTL_S) * 1000)
if not redis.call('SET', K_HOLD, record, 'NX', 'PXAT', keep_until) then
  return fail('ALREADY_EXISTS', 'resource_type', 'hold', 'resource_id', HOLD_ID)
end
-- Reserve: held grows, the hold joins the open holds and their expiry order.
W.held = W.held + AMOUNT
redis.call('HSET', K_HO, HOLD_ID, record)
redis.call('ZADD', K_HX, fmt(h.expires), HOLD_ID)
due_at(h.expires)
hold_touched(h)
add_entry(ENTRY_ID, 'hold', RID, MEMO, {})

local top_up = top_up_after_spend(before)
return finish('authorize', RID, HASH, K_IDEM, TTL_S, function()
  return result_json({hold = HOLD_ID, amount = fmt(AMOUNT), expires = fmt(h.expires),
    top_up = top_up})
end)
