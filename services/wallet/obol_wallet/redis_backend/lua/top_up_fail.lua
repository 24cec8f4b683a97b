-- top_up_fail.lua: record that an attempt's payment failed (after common.lua and
-- top_up.lua). ARGV[4] attempt id, [5] '1' if the payment method cannot work at all,
-- [6] first retry delay (ms), [7] longest retry delay (ms), [8] the payment's error.
-- Only while the attempt is pending (a repeat changes nothing): it stops being pending and
-- the failure is counted (event `auto_top_up_failed`). An enabled rule then disables
-- itself (at max failures, or at once for an unusable payment method; event
-- `auto_top_up_disabled`, the alert), or retries after an exponential backoff: no attempt
-- starts before then, and the worker looks at the wallet at that time.
-- Reply {'ok', '1' recorded / '0' repeat, failures, next attempt ms, enabled '1'/'0',
-- disabled reason, rule version}: the rule's status either way.
need_top_up()
local ATTEMPT, INVALID = ARGV[4], ARGV[5] == '1'
local BASE_MS, MAX_MS, ERROR = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]

if not W then
  return NOT_HYDRATED
end
local T = top_up_read()
local recorded = '0'
if T.pend == ATTEMPT then
  recorded = '1'
  T.fail = T.fail + 1
  local next_ms, disabled = 0, false
  if T.on and (INVALID or T.fail >= T.max) then
    T.on, disabled = false, true
    T.why = INVALID and 'payment_method_invalid' or 'too_many_failures'
  elseif T.on then
    -- base, 2 x base, 4 x base... capped (as model.retry_delay_ms)
    local delay = BASE_MS
    for _ = 2, math.min(T.fail, 64) do
      delay = math.min(2 * delay, MAX_MS)
    end
    next_ms = NOW + math.min(delay, MAX_MS)
  end
  redis.call('HSET', K_W, 'tu_pend', '', 'tu_fail', fmt(T.fail), 'tu_on', T.on and '1' or '0',
    'tu_why', T.why)
  top_up_schedule(T, next_ms)
  top_up_event(ATTEMPT .. ':failed', 'auto_top_up_failed', {'attempt_id', ATTEMPT,
    'error', ERROR, 'consecutive_failures', fmt(T.fail), 'next_attempt_ms', fmt(next_ms)})
  if disabled then
    top_up_event(ATTEMPT .. ':disabled', 'auto_top_up_disabled', {'attempt_id', ATTEMPT,
      'reason', T.why, 'consecutive_failures', fmt(T.fail)})
  end
end
return {'ok', recorded, fmt(T.fail), fmt(T.next), T.on and '1' or '0', T.why, fmt(T.ver)}
