-- capture.lua: charge an open hold's final amount; draw grants in order (then overdraft),
-- release the rest of the reservation, record the provider cost.
-- KEYS[10] idempotency record, KEYS[11] the hold's record {p}:h:<hold>.
-- ARGV[4] request id, [5] request hash, [6] idempotency TTL (s), [7] hold id, [8] amount,
-- [9] allow overcapture ('1'/'0'), [10] memo (JSON), [11] cost currency ('': none),
-- [12] cost amount.
-- Guarantees: a hold resolves once; up to its reservation a capture always fits; beyond it
-- only with allow overcapture, from the free balance (available excluding this hold), and
-- not on a frozen wallet; available >= 0 and overdraft used >= -limit after it.
local K_IDEM, K_HOLD = KEYS[10], KEYS[11]
local RID, HASH, TTL_S = ARGV[4], ARGV[5], ARGV[6]
local HOLD_ID, AMOUNT, ALLOW_OVER, MEMO = ARGV[7], tonumber(ARGV[8]), ARGV[9] == '1', ARGV[10]
local COST_CURRENCY, COST_AMOUNT = ARGV[11], tonumber(ARGV[12])

local early = begin(K_IDEM, HASH, nil)
if early then
  return early
end
local h = hold_get(HOLD_ID)
if not h then
  return fail(closed_hold_reason(K_HOLD))
end
local reserved = h.authorized - h.debited
if AMOUNT > reserved then
  if not ALLOW_OVER then
    return fail('CAPTURE_EXCEEDS_HOLD', 'asset_code', W.asset,
      'held', fmt(reserved), 'required', fmt(AMOUNT))
  end
  if W.frozen then
    return fail('WALLET_FROZEN')
  end
end
-- What this capture may draw: its own reservation plus the free balance. Below the
-- reservation this only fails when grants backing open holds have expired meanwhile.
local usable = available() + reserved
if usable < AMOUNT then
  return fail('INSUFFICIENT_FUNDS', 'asset_code', W.asset,
    'available', fmt(usable), 'required', fmt(AMOUNT))
end

hold_close(h, 'captured', NOW)
h.captured = AMOUNT
local lines = {}
local draws, overdraft = spend(AMOUNT, lines)
add_cost(lines, COST_CURRENCY, COST_AMOUNT)
redis.call('HSET', K_HOLD, 'state', 'captured', 'captured', fmt(AMOUNT), 'closed', fmt(NOW))
redis.call('PEXPIRE', K_HOLD, fmt(tonumber(TTL_S) * 1000))
add_entry(ENTRY_ID, 'capture', RID, MEMO, lines)

return finish('capture', RID, HASH, K_IDEM, TTL_S, function()
  return result_json({hold = HOLD_ID, charged = fmt(AMOUNT),
    released = fmt(math.max(reserved - AMOUNT, 0)), overdraft = fmt(overdraft)},
    {draws = draws})
end)
