-- charge.lua: authorize and capture in one step, for known prices.
-- KEYS[10] idempotency record, KEYS[11], KEYS[12] {p}:topups, {p}:topup_due (top_up.lua).
-- ARGV[4] request id, [5] request hash, [6] idempotency TTL (s), [7] backlog limit,
-- [8] amount, [9] memo (JSON), [10] cost currency ('': none), [11] cost amount.
-- Guarantees: available >= amount before (so >= 0 after); a frozen wallet is refused.
need_grants()
local K_IDEM = KEYS[10]
local RID, HASH, TTL_S = ARGV[4], ARGV[5], ARGV[6]
local AMOUNT, MEMO = tonumber(ARGV[8]), ARGV[9]
local COST_CURRENCY, COST_AMOUNT = ARGV[10], tonumber(ARGV[11])

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

local lines = {}
local draws, overdraft = spend(AMOUNT, lines)
add_cost(lines, COST_CURRENCY, COST_AMOUNT)
add_entry(ENTRY_ID, 'charge', RID, MEMO, lines)

local top_up = top_up_after_spend(before)
return finish('charge', RID, HASH, K_IDEM, TTL_S, function()
  return result_json({hold = '', charged = fmt(AMOUNT), released = '0', top_up = top_up,
    overdraft = fmt(overdraft)}, {draws = draws})
end)
