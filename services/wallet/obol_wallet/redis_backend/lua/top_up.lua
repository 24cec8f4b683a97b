-- top_up.lua: auto top-up and balance alerts (docs/wallet.md "Auto top-up"). Prepended
-- after common.lua to the scripts that spend (authorize, capture, charge, debit), to
-- grant.lua and to the top_up_*.lua scripts; their last two KEYS are the partition's
--   {p}:topups     stream of attempts to run and events to record, for the top-up worker
--   {p}:topup_due  zset, wallet -> ms when the worker should look at it (a retry's time)
--
-- The rule's mirror (top_up_rule.lua writes it from Postgres) and its live state are
-- fields of the wallet hash; a wallet that never had a rule has none of them:
--   tu_ver   the mirrored rule version (auto_topup_rules.version)
--   tu_rule  '1' while a rule exists ('0' once deleted); tu_on '1' while it is enabled
--   tu_why   why it is disabled: '', 'operator', 'too_many_failures', 'payment_method_invalid'
--   tu_thr   threshold: an attempt starts when available falls below it
--   tu_amt   amount per attempt, or 0 and tu_to: buy what brings available up to it
--   tu_pm    payment method id; tu_max consecutive failures that disable the rule
--   tu_fail  consecutive failures; tu_next no attempt starts before this ms (0: none due)
--   tu_pend  the attempt in flight ('' none). Exactly one at a time: only a spend (or the
--            worker's look at a due wallet) sets it, and only while it is '', in the same
--            atomic call that queues the attempt; only the grant that pays it out
--            (grant.lua) or its recorded failure (top_up_fail.lua) clears it.
-- An attempt's id is '<wallet>:<seq>', seq being the ledger sequence of the entry that
-- started it: never reused (seq only grows and is rebuilt from Postgres).

local K_TOPUPS, K_TU_DUE = KEYS[#KEYS - 1], KEYS[#KEYS]
local top_up_read, top_up_schedule, top_up_start, top_up_event, top_up_alert, top_up_paid

-- The rule's reading, scheduling, attempts and events: defined on first need (the scripts
-- that use them call need_top_up() first; a spend only when the wallet has a rule or
-- just depleted), as need_grants() in common.lua.
local function need_top_up()
  if top_up_read then
    return
  end
  function top_up_read()
    local v = redis.call('HMGET', K_W, 'tu_ver', 'tu_rule', 'tu_on', 'tu_why', 'tu_thr',
      'tu_amt', 'tu_to', 'tu_pm', 'tu_max', 'tu_fail', 'tu_next', 'tu_pend')
    return {ver = tonumber(v[1]) or 0, rule = v[2] == '1', on = v[3] == '1', why = v[4] or '',
      thr = tonumber(v[5]) or 0, amt = tonumber(v[6]) or 0, to = tonumber(v[7]) or 0,
      pm = v[8] or '', max = tonumber(v[9]) or 0, fail = tonumber(v[10]) or 0,
      next = tonumber(v[11]) or 0, pend = v[12] or ''}
  end

  -- When the worker should next look at the wallet (0: never); written to tu_next and
  -- mirrored in {p}:topup_due.
  function top_up_schedule(T, ms)
    T.next = ms
    redis.call('HSET', K_W, 'tu_next', fmt(ms))
    if ms > 0 then
      redis.call('ZADD', K_TU_DUE, fmt(ms), WALLET_ID)
    else
      redis.call('ZREM', K_TU_DUE, WALLET_ID)
    end
  end

  -- Starts an attempt for a wallet with `free` available, named after the last ledger entry
  -- (the one that started it): pending from now on, queued for the worker. Returns '1'.
  function top_up_start(T, free)
    local amount = T.amt
    if amount == 0 then
      amount = T.to - free -- the rule's target is above its threshold, so above free
    end
    local id = WALLET_ID .. ':' .. fmt(W.seq)
    T.pend = id
    redis.call('HSET', K_W, 'tu_pend', id)
    top_up_schedule(T, 0)
    redis.call('XADD', K_TOPUPS, '*', 'type', 'attempt', 'w', WALLET_ID, 'id', id,
      'asset', W.asset, 'amount', fmt(amount), 'pm', T.pm, 'at', fmt(NOW))
    return '1'
  end

  -- A typed event (wallet_events) for the worker to record, emitted in the same atomic call
  -- as what it reports; its id is derived from that cause, so it is recorded once. `data`
  -- is a flat list of name, value strings.
  function top_up_event(id, kind, data)
    redis.call('XADD', K_TOPUPS, '*', 'type', 'event', 'w', WALLET_ID, 'id', id, 'kind', kind,
      'at', fmt(NOW), unpack(data))
  end

  -- A balance alert of this call (named after its entry id).
  function top_up_alert(kind, free, threshold)
    top_up_event(ENTRY_ID .. ':' .. kind, kind,
      {'available', fmt(free), 'threshold', fmt(threshold)})
  end

  -- The grant `grant_id` of `amount` pays out attempt `id`: it is no longer pending, the
  -- rule's failures start over and `auto_top_up_succeeded` is emitted (in grant.lua's atomic
  -- call, so paid and pending never disagree).
  function top_up_paid(id, grant_id, amount)
    if redis.call('HGET', K_W, 'tu_pend') == id then
      redis.call('HSET', K_W, 'tu_pend', '')
    end
    redis.call('HSET', K_W, 'tu_fail', '0')
    top_up_event(id .. ':succeeded', 'auto_top_up_succeeded',
      {'attempt_id', id, 'grant_id', grant_id, 'amount', fmt(amount)})
  end
end

-- At the end of a spend, with `before` its available after settling time: the `depleted`
-- alert (available reached zero) and, with a rule, the `low_balance` alert (available
-- fell below its threshold); then an attempt if the rule is enabled, available is below
-- its threshold, none is pending and no retry delay runs. Returns '1' if it started one,
-- else '0' (the spend's result carries it as `top_up`).
local function top_up_after_spend(before)
  local after = available()
  local depleted = before > 0 and after <= 0
  if not (W.top_up_rule or depleted) then
    return '0' -- the common case costs no read of the rule's fields
  end
  need_top_up()
  local T = top_up_read()
  if depleted then
    -- A deleted rule's fields stay in the hash: its threshold is no longer the wallet's.
    top_up_alert('depleted', after, T.rule and T.thr or 0)
  end
  if not T.rule then
    return '0'
  end
  if before >= T.thr and after < T.thr then
    top_up_alert('low_balance', after, T.thr)
  end
  if T.on and T.pend == '' and after < T.thr and NOW >= T.next then
    return top_up_start(T, after)
  end
  return '0'
end
