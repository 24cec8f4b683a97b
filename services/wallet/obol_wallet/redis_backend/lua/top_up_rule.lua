-- top_up_rule.lua: mirror a wallet's auto top-up rule from Postgres (the system of
-- record) into its hash (after common.lua and top_up.lua, which lists the fields).
-- ARGV[4] rule version, [5] '1' the rule exists / '0' it was deleted, [6] enabled ('1'/'0'),
-- [7] disabled reason, [8] threshold, [9] amount, [10] top up to, [11] payment method,
-- [12] max failures, [13] consecutive failures, [14] next attempt (ms; 0: none).
-- Applied only when newer than the mirrored version, so a late or repeated mirror never
-- undoes a newer one. The attempt in flight (tu_pend) is left alone: it completes.
-- Reply {'ok', '1' applied / '0' not newer}.
need_top_up()
local VERSION, EXISTS, ENABLED, WHY = tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local NEXT = tonumber(ARGV[14])

if not W then
  return NOT_HYDRATED
end
local T = top_up_read()
if VERSION <= T.ver then
  return {'ok', '0'}
end
redis.call('HSET', K_W, 'tu_ver', ARGV[4], 'tu_rule', EXISTS, 'tu_on', ENABLED, 'tu_why', WHY,
  'tu_thr', ARGV[8], 'tu_amt', ARGV[9], 'tu_to', ARGV[10], 'tu_pm', ARGV[11],
  'tu_max', ARGV[12], 'tu_fail', ARGV[13])
if ENABLED == '1' then
  top_up_schedule(T, NEXT)
else
  top_up_schedule(T, 0)
end
return {'ok', '1'}
