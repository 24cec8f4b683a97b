-- debit.lua: draw one chunk of a streaming generation from an open hold, right away:
-- grants in order (then overdraft), a DEBIT entry (grant -> revenue, plus the provider
-- cost), the hold's reservation shrinks by what it covered and its expiry moves to at
-- least now + its TTL (a running stream is never swept as expired).
-- KEYS[10] idempotency record, KEYS[11] the hold's record {p}:h:<hold>,
-- KEYS[12], KEYS[13] {p}:topups, {p}:topup_due (top_up.lua).
-- ARGV[4] request id, [5] request hash, [6] idempotency TTL (s), [7] hold id, [8] amount
-- (the chunk, > 0), [9] memo (JSON), [10] cost currency ('': none), [11] cost amount.
-- A chunk beyond the hold's reservation (the overrun) draws only on the free balance
-- (available excluding this hold: never on other holds' reservations), and not at all on
-- a frozen wallet; what cannot be drawn is the shortfall, which is not charged. So the
-- chunk is charged min(amount, reservation + free balance) and available never drops
-- below zero (nor overdraft used below -limit) because of it.
-- Reply result: charged, shortfall, the hold's remaining reservation, debited and expiry.
need_grants()
need_holds()
local K_IDEM, K_HOLD = KEYS[10], KEYS[11]
local RID, HASH, TTL_S = ARGV[4], ARGV[5], ARGV[6]
local HOLD_ID, AMOUNT, MEMO = ARGV[7], tonumber(ARGV[8]), ARGV[9]
local COST_CURRENCY, COST_AMOUNT = ARGV[10], tonumber(ARGV[11])

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
-- What the chunk may draw: its hold's reservation plus the free balance (`before`)
-- (the reservation only, on a frozen wallet). Negative free balance (grants backing
-- open holds expired meanwhile) lowers it, so funds are never overdrawn.
local usable = reserved + before
if W.frozen then
  usable = math.min(usable, reserved)
end
local charged = math.max(math.min(AMOUNT, usable), 0)
local from_hold = math.min(charged, reserved)

h.debited = h.debited + from_hold
h.expires = math.max(h.expires, NOW + h.ttl)
W.held = W.held - from_hold
hold_save(h, K_HOLD, TTL_S)
local lines = {}
local draws, overdraft = spend(charged, lines)
add_cost(lines, COST_CURRENCY, COST_AMOUNT)
add_entry(ENTRY_ID, 'debit', RID, MEMO, lines)

local top_up = top_up_after_spend(before)
return finish('debit', RID, HASH, K_IDEM, TTL_S, function()
  return result_json({hold = HOLD_ID, charged = fmt(charged), top_up = top_up,
    shortfall = fmt(AMOUNT - charged), remaining = fmt(h.authorized - h.debited),
    debited = fmt(h.debited), expires = fmt(h.expires), overdraft = fmt(overdraft)},
    {draws = draws})
end)
