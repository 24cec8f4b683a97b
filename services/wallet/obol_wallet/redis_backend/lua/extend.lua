-- extend.lua: push an open hold's expiry out and optionally reserve more (ExtendHold).
-- KEYS[10] idempotency record, KEYS[11] the hold's record {p}:h:<hold>.
-- ARGV[4] request id, [5] request hash, [6] idempotency TTL (s), [7] hold id, [8] new TTL
-- (ms), [9] increase (0: none), [10] memo (JSON).
-- The TTL becomes the hold's (stream debits push the expiry to now + it); the expiry
-- becomes now + TTL, never earlier than it was. An increase is a new reservation: refused
-- on a frozen wallet and unless available covers it (then available >= 0 after it); it
-- is recorded by a HOLD entry (no lines). A plain extension moves no money: no entry.
need_holds()
local K_IDEM, K_HOLD = KEYS[10], KEYS[11]
local RID, HASH, TTL_S = ARGV[4], ARGV[5], ARGV[6]
local HOLD_ID, HOLD_TTL, INCREASE, MEMO = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]

local early = begin(K_IDEM, HASH, nil)
if early then
  return early
end
local h = hold_get(HOLD_ID)
if not h then
  return fail(closed_hold_reason(K_HOLD))
end
if INCREASE > 0 then
  if W.frozen then
    return fail('WALLET_FROZEN')
  end
  local free = available()
  if free < INCREASE then
    return fail('INSUFFICIENT_FUNDS', 'asset_code', W.asset,
      'available', fmt(free), 'required', fmt(INCREASE))
  end
  h.authorized = h.authorized + INCREASE
  W.held = W.held + INCREASE
  add_entry(ENTRY_ID, 'hold', RID, MEMO, {})
end
h.ttl = HOLD_TTL
h.expires = math.max(h.expires, NOW + HOLD_TTL)
hold_save(h, K_HOLD, TTL_S)

return finish('extend', RID, HASH, K_IDEM, TTL_S, function()
  return result_json({hold = HOLD_ID, authorized = fmt(h.authorized),
    debited = fmt(h.debited), expires = fmt(h.expires), created = fmt(h.created),
    ttl = fmt(h.ttl)})
end)
