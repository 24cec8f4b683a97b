-- hold.lua: settle time, then read one hold.
-- KEYS[10] the hold's record {p}:h:<hold>. ARGV[4] hold id.
-- Reply: {'ok', state, authorized, debited, captured, expires, created}. An open hold is
-- read from ho; a closed one from its record, where 'open' means settle() expired it.
local K_HOLD, HOLD_ID = KEYS[10], ARGV[4]

if not W then
  return NOT_HYDRATED
end
settle()
commit('expire', '', '', nil)
local h = hold_get(HOLD_ID)
if h then
  return {'ok', 'open', fmt(h.authorized), fmt(h.debited), '0', fmt(h.expires),
    fmt(h.created)}
end
local v = redis.call('HMGET', K_HOLD, 'state', 'amount', 'debited', 'captured', 'exp', 'created')
if not v[1] then
  return {'err', 'UNKNOWN_HOLD'}
end
local state = v[1]
if state == 'open' then
  state = 'expired'
end
return {'ok', state, v[2], v[3] or '0', v[4] or '0', v[5], v[6]}
