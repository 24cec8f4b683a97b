-- settings.lua: freeze/unfreeze and the overdraft limit (an ADJUSTMENT entry, no lines,
-- whose memo names the new settings).
-- KEYS[10] idempotency record.
-- ARGV[4] request id, [5] request hash, [6] idempotency TTL (s), [7] frozen ('', '0',
-- '1'; '': unchanged), [8] overdraft limit ('': unchanged).
-- Guarantees: a lower limit must still cover what is used and reserved (available stays
-- >= 0, INSUFFICIENT_FUNDS otherwise); a higher one keeps totals <= 2^53 - 1.
need_grants()
local K_IDEM = KEYS[10]
local RID, HASH, TTL_S = ARGV[4], ARGV[5], ARGV[6]
local FROZEN, LIMIT = ARGV[7], ARGV[8]

local early = begin(K_IDEM, HASH, nil)
if early then
  return early
end
local memo = {}
if LIMIT ~= '' then
  local limit = tonumber(LIMIT)
  if limit < W.limit then
    local free = available()
    if free < W.limit - limit then
      return fail('INSUFFICIENT_FUNDS', 'asset_code', W.asset,
        'available', fmt(free), 'required', fmt(W.limit - limit))
    end
  elseif limit > W.limit then
    local total = W.active + pending_total()
    if limit > MAX - total then
      return fail('AMOUNT_OUT_OF_RANGE', 'total', fmt(total), 'required', LIMIT,
        'limit', fmt(MAX))
    end
  end
  W.limit = limit
  memo.overdraft_limit = LIMIT
end
if FROZEN ~= '' then
  W.frozen = FROZEN == '1'
  memo.frozen = FROZEN
end
add_entry(ENTRY_ID, 'adjustment', RID, cjson.encode(memo), {})

return finish('settings', RID, HASH, K_IDEM, TTL_S, function()
  return result_json({})
end)
