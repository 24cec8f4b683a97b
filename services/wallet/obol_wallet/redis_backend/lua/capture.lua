-- capture.lua: settle an open hold at its final total. What stream debits drew counts
-- toward the total: the rest is drawn now (grants in order, then overdraft) and the
-- remaining reservation released; a total below the debits gives the difference back
-- (a REVERSAL entry into a new adjustment grant). Records the provider cost.
-- KEYS[10] idempotency record, KEYS[11] the hold's record {p}:h:<hold>,
-- KEYS[12], KEYS[13] {p}:topups, {p}:topup_due (top_up.lua).
-- ARGV[4] request id, [5] request hash, [6] idempotency TTL (s), [7] hold id, [8] amount
-- (the total), [9] allow overcapture ('1'/'0'), [10] memo (JSON), [11] cost currency
-- ('': none), [12] cost amount, [13] the reversal's grant id, [14] its priority.
-- Guarantees: a hold resolves once; up to its reservation a capture always fits; beyond it
-- only with allow overcapture, from the free balance (available excluding this hold), and
-- not on a frozen wallet; available >= 0 and overdraft used >= -limit after it.
need_grants()
need_holds()
local K_IDEM, K_HOLD = KEYS[10], KEYS[11]
local RID, HASH, TTL_S = ARGV[4], ARGV[5], ARGV[6]
local HOLD_ID, AMOUNT, ALLOW_OVER, MEMO = ARGV[7], tonumber(ARGV[8]), ARGV[9] == '1', ARGV[10]
local COST_CURRENCY, COST_AMOUNT = ARGV[11], tonumber(ARGV[12])
local REVERSAL_GRANT, REVERSAL_PRIORITY = ARGV[13], tonumber(ARGV[14])

local early = begin(K_IDEM, HASH, nil)
if early then
  return early
end
local before = available() -- the free balance; also the auto top-up check's "before"
local h = hold_get(HOLD_ID)
if not h then
  return fail(closed_hold_reason(K_HOLD))
end
local reserved = h.authorized - h.debited
-- Debits already drew part of the total: draw the rest now, or give back their excess.
local rest = math.max(AMOUNT - h.debited, 0)
local give_back = math.max(h.debited - AMOUNT, 0)
if rest > reserved then
  if not ALLOW_OVER then
    return fail('CAPTURE_EXCEEDS_HOLD', 'asset_code', W.asset,
      'held', fmt(reserved), 'required', fmt(rest))
  end
  if W.frozen then
    return fail('WALLET_FROZEN')
  end
end
-- What this capture may draw: its own reservation plus the free balance. Below the
-- reservation this only fails when grants backing open holds have expired meanwhile.
local usable = before + reserved
if usable < rest then
  return fail('INSUFFICIENT_FUNDS', 'asset_code', W.asset,
    'available', fmt(usable), 'required', fmt(rest))
end
if give_back > 0 then
  local total = W.active + pending_total() + W.limit
  if give_back > MAX - total then
    return fail('AMOUNT_OUT_OF_RANGE', 'total', fmt(total), 'required', fmt(give_back),
      'limit', fmt(MAX))
  end
end

hold_close(h, 'captured', NOW)
h.captured = AMOUNT
if give_back > 0 then
  -- The reversal comes first, so that the capture is the call's last entry. Revenue goes
  -- back into a new adjustment grant (the debits' draws are not tracked per grant), which
  -- first repays any overdraft used.
  local g = {id = REVERSAL_GRANT, remaining = give_back, amount = give_back,
    priority = REVERSAL_PRIORITY, effective = NOW, expires = 0, kind = 'adjustment',
    created = NOW, refunded = 0, expired = false}
  local reversal = {line('revenue:' .. W.asset, -give_back),
    line(grant_account(g.id), give_back)}
  grant_touched(g)
  grant_activate(g, reversal)
  add_entry(nil, 'reversal', RID, cjson.encode({hold_id = HOLD_ID, grant_id = g.id}), reversal)
end
local lines = {}
local draws, overdraft = spend(rest, lines)
add_cost(lines, COST_CURRENCY, COST_AMOUNT)
redis.call('SET', K_HOLD, hold_pack(h), 'EX', TTL_S) -- kept for the retention
add_entry(ENTRY_ID, 'capture', RID, MEMO, lines)

local top_up = top_up_after_spend(before)
return finish('capture', RID, HASH, K_IDEM, TTL_S, function()
  return result_json({hold = HOLD_ID, charged = fmt(AMOUNT), top_up = top_up,
    released = fmt(math.max(reserved - rest, 0)), overdraft = fmt(overdraft),
    reversed = fmt(give_back)}, {draws = draws})
end)
