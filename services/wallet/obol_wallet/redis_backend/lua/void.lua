-- void.lua: release an open hold entirely (a RELEASE entry, no lines).
-- KEYS[10] idempotency record, KEYS[11] the hold's record {p}:h:<hold>.
-- ARGV[4] request id, [5] request hash, [6] idempotency TTL (s), [7] hold id, [8] memo.
-- Guarantees: a hold resolves once; allowed on a frozen wallet (it only frees funds).
need_holds()
local K_IDEM, K_HOLD = KEYS[10], KEYS[11]
local RID, HASH, TTL_S = ARGV[4], ARGV[5], ARGV[6]
local HOLD_ID, MEMO = ARGV[7], ARGV[8]

local early = begin(K_IDEM, HASH, nil)
if early then
  return early
end
local h = hold_get(HOLD_ID)
if not h then
  return fail(closed_hold_reason(K_HOLD))
end

local released = h.authorized - h.debited
hold_close(h, 'voided', NOW)
redis.call('SET', K_HOLD, hold_pack(h), 'EX', TTL_S) -- kept for the retention
add_entry(ENTRY_ID, 'release', RID, MEMO, {})

return finish('void', RID, HASH, K_IDEM, TTL_S, function()
  return result_json({released = fmt(released)})
end)
