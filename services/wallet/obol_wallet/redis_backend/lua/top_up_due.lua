-- top_up_due.lua: the worker's look at a wallet of {p}:topup_due whose time came (a retry
-- after a failure, or a rule just set): after settling time, start an attempt if the
-- rule still asks for one, else take the wallet off the list (after common.lua and
-- top_up.lua). ARGV[3] the entry id of the attempt's ledger entry: an ADJUSTMENT without
-- lines (like a settings change) whose seq names the attempt.
-- Reply {'ok', '1' started / '0' not}.
need_top_up()
if not W then
  redis.call('ZREM', K_TU_DUE, WALLET_ID) -- nothing to do until it is hydrated again
  return NOT_HYDRATED
end
settle()
local T = top_up_read()
local started = '0'
if T.next > NOW then
  -- rescheduled since the worker listed it: it stays listed at its new time
elseif T.on and T.pend == '' and available() < T.thr then
  local attempt = WALLET_ID .. ':' .. fmt(W.seq + 1) -- top_up_start() names it the same
  local memo = cjson.encode({reason = 'auto_top_up', attempt_id = attempt})
  add_entry(ENTRY_ID, 'adjustment', '', memo, {})
  started = top_up_start(T, available())
else
  top_up_schedule(T, 0)
end
commit('top_up', '', '', nil)
return {'ok', started}
