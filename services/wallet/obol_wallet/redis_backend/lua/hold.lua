-- hold.lua: settle time, then read one hold.
-- KEYS[10] the hold's record {p}:h:<hold>. ARGV[4] hold id.
-- Reply: {'ok', state, authorized, debited, captured, expires, created, ttl}. An open
-- hold is read from ho; a closed one from {p}:h:<hold>, where 'open' means settle()
-- expired it.
need_holds()
local K_HOLD, HOLD_ID = KEYS[10], ARGV[4]

if not W then
  return NOT_HYDRATED
end
settle()
commit('expire', '', '', nil)
local h = hold_get(HOLD_ID)
if not h then
  local record = redis.call('GET', K_HOLD)
  if not record then
    return {'err', 'UNKNOWN_HOLD'}
  end
  h = hold_unpack(HOLD_ID, record)
  if h.state == 'open' then
    h.state = 'expired'
  end
end
return {'ok', h.state, fmt(h.authorized), fmt(h.debited), fmt(h.captured), fmt(h.expires),
  fmt(h.created), fmt(h.ttl)}
