-- common.lua: prepended to every wallet script (scripts, not a Function library: see
-- scripts.py).
--
-- KEYS[1..9], the wallet's keys (docs/wallet.md), all with the partition's hash tag:
--   w (counters), g (grants), gq (draw order), gp (pending grants), gx (grant expiry),
--   hx (hold expiry), ho (open holds), ledger (partition stream), due (partition work list)
-- ARGV[1] wallet id, ARGV[2] now (ms, from the service's clock: Lua never reads a clock),
-- ARGV[3] entry id of the operation; entries made while settling time get
-- '<entry id>.<seq>' (unique: seq is the wallet's ledger sequence).
--
-- Numbers: every amount and counter stays an integer within 0..MAX (2^53 - 1, exact in
-- a Lua double; the scripts refuse what would leave it). Numbers leave Lua only through
-- fmt() (string.format('%d')): never tostring, never cjson (14 significant digits). JSON
-- is made by cjson over tables of strings only.
--
-- Flow of a script: W (the wallet's counters) is read once; settle() applies time; the
-- operation checks, then changes W and the grant/hold keys while gathering the ledger
-- entries and touched grant/hold states in M; commit() writes W back, appends the ONE
-- stream message and publishes the balance. A refusal (fail()) still commits what
-- settling time changed, so the stream never misses an entry.
--
-- Cost: Redis runs this whole file on every script call, making each of its functions anew
-- (~0.4 us apiece). So the helpers most calls never use are made on first need: a script
-- that uses the grant or hold helpers calls need_grants() / need_holds() first (top_up.lua:
-- need_top_up()), and settle() does when something is due. An authorization makes 22 of
-- the 47.

local MAX = 9007199254740991
local NEVER = 99999999999999 -- draw-order stand-in for "never expires" (14 digits)
local MEMBER_ID_AT = 37 -- where the grant id starts in a gq member (after 36 chars)
local NOT_HYDRATED = {'err', 'WALLET_NOT_HYDRATED'}
local REPAY_MEMO = '{"reason":"overdraft_repayment"}'

local K_W, K_G, K_GQ, K_GP, K_GX = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_HX, K_HO, K_LEDGER, K_DUE = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local WALLET_ID, NOW, ENTRY_ID = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local OVERDRAFT_ACCOUNT = 'wallet:' .. WALLET_ID .. ':overdraft'

-- Formatting is costly in Lua (sprintf): each distinct number is formatted once per call.
local FORMATTED = {}
local function fmt(n)
  local s = FORMATTED[n]
  if not s then
    s = string.format('%d', n)
    FORMATTED[n] = s
  end
  return s
end

-- Splits 'a|b|c' into at most n fields; the last one keeps any further '|'.
local function split(s, n)
  local fields, pos = {}, 1
  for i = 1, n - 1 do
    local bar = string.find(s, '|', pos, true)
    if not bar then
      break
    end
    fields[i] = string.sub(s, pos, bar - 1)
    pos = bar + 1
  end
  fields[#fields + 1] = string.sub(s, pos)
  return fields
end

local function json_list(encoded_items)
  return '[' .. table.concat(encoded_items, ',') .. ']'
end

-- The wallet's counters, read once; nil when its hot state is missing (fail closed).
local W
do
  local v = redis.call('HMGET', K_W, 'hydrated', 'asset', 'limit', 'od', 'held', 'active',
    'frozen', 'seq', 'ver', 'due', 'tu_rule')
  if v[1] then
    W = {asset = v[2], limit = tonumber(v[3]), od = tonumber(v[4]), held = tonumber(v[5]),
      active = tonumber(v[6]), frozen = v[7] == '1', seq = tonumber(v[8]),
      ver = tonumber(v[9]), due = tonumber(v[10]) or 0, due_dirty = false,
      top_up_rule = v[11] == '1'} -- top_up.lua reads the rule itself only when there is one
  end
end

-- What this call changed, for the one stream message.
local M = {changed = false, entries = {}, entry_ids = {}, grants = {}, grant_order = {},
  holds = {}}

-- Defined on first need by need_grants() and need_holds() (below); declared here, so that
-- every function sees them.
local line, grant_account, first_score, due_recompute, grant_get, grant_save, grant_member,
  grant_touched, grant_remove, grant_activate, grant_expire, pending_total, spend, add_cost
local hold_unpack, hold_get, hold_save, hold_close, closed_hold_reason

local function available()
  return W.active + W.od - W.held + W.limit
end

-- Appends a ledger entry with the wallet's next seq; id nil: a derived id.
-- lines: {{account, asset, amount string}, ...}, summing to zero per asset.
local function add_entry(id, kind, rid, memo, lines)
  W.seq = W.seq + 1
  id = id or (ENTRY_ID .. '.' .. fmt(W.seq))
  local head = cjson.encode({id = id, seq = fmt(W.seq), kind = kind, rid = rid,
    at = fmt(NOW), memo = memo})
  local encoded = {}
  for i, l in ipairs(lines) do
    encoded[i] = cjson.encode(l)
  end
  M.entries[#M.entries + 1] = string.sub(head, 1, -2) .. ',"lines":' .. json_list(encoded) .. '}'
  M.entry_ids[#M.entry_ids + 1] = cjson.encode(id)
  M.changed = true
end

-- ---- the due time: earliest activation/expiry, mirrored in the partition's work list ----

local function due_set(ms)
  if ms ~= W.due then
    W.due, W.due_dirty = ms, true
    if ms == 0 then
      redis.call('ZREM', K_DUE, WALLET_ID)
    else
      redis.call('ZADD', K_DUE, fmt(ms), WALLET_ID)
    end
  end
end

local function due_at(ms)
  if W.due == 0 or ms < W.due then
    due_set(ms)
  end
end

-- ---- holds ----
-- One record format, `state|authorized|debited|captured|expires|created|closed|ttl|rid`
-- (closed '' while open; ttl in ms, what each stream debit pushes the expiry to from now;
-- rid last as it may hold '|'), kept in two places:
--   ho, hold id -> record, for open holds: what settle() reads to expire them;
--   {p}:h:<hold>, a string key per hold, written when authorized (SET NX, so an id is
--   never reused), debited, extended, captured or voided; it answers for the hold once it
--   left ho ('open' there then means settle() expired it) and outlives it by the retention.

local function hold_pack(h)
  local closed = ''
  if h.closed ~= 0 then
    closed = fmt(h.closed)
  end
  return table.concat({h.state, fmt(h.authorized), fmt(h.debited), fmt(h.captured),
    fmt(h.expires), fmt(h.created), closed, fmt(h.ttl), h.rid}, '|')
end

local function hold_touched(h)
  M.holds[#M.holds + 1] = h
  M.changed = true
end

-- ---- grants: g holds id -> remaining|amount|priority|effective|expires|kind|created|refunded
--
-- Defined on first need (scripts that spend, grant or refund call need_grants() first;
-- settle() when something is due): Redis makes every function of a script anew on each
-- call, ~0.4 us apiece, and most calls, such as an authorization, never use these.
local function need_grants()
  if line then
    return
  end
  function line(account, amount)
    return {account, W.asset, fmt(amount)}
  end

  function grant_account(grant_id)
    return 'wallet:' .. WALLET_ID .. ':grant:' .. grant_id
  end

  function first_score(key)
    return tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
  end

  function due_recompute()
    local due = 0
    for _, key in ipairs({K_GP, K_GX, K_HX}) do
      local score = first_score(key)
      if score and (due == 0 or score < due) then
        due = score
      end
    end
    due_set(due)
  end

  function grant_get(id)
    local s = redis.call('HGET', K_G, id)
    if not s then
      return nil
    end
    local f = split(s, 8)
    return {id = id, remaining = tonumber(f[1]), amount = tonumber(f[2]),
      priority = tonumber(f[3]), effective = tonumber(f[4]), expires = tonumber(f[5]),
      kind = f[6], created = tonumber(f[7]), refunded = tonumber(f[8]), expired = false}
  end

  function grant_save(g)
    redis.call('HSET', K_G, g.id, table.concat({fmt(g.remaining), fmt(g.amount),
      fmt(g.priority), fmt(g.effective), fmt(g.expires), g.kind, fmt(g.created),
      fmt(g.refunded)}, '|'))
  end

  -- The grant's gq member; lex order is the drawdown order: priority, then expiry (never
  -- last), then creation, then id.
  function grant_member(g)
    local expires = g.expires
    if expires == 0 then
      expires = NEVER
    end
    return string.format('%05d|%014d|%014d|', g.priority, expires, g.created) .. g.id
  end

  -- Records the grant's new state for the stream message (encoded at commit).
  function grant_touched(g)
    if not M.grants[g.id] then
      M.grant_order[#M.grant_order + 1] = g.id
    end
    M.grants[g.id] = g
    M.changed = true
  end

  -- Removes a grant with nothing left from the hot state (its final state is streamed).
  function grant_remove(g)
    redis.call('HDEL', K_G, g.id)
    redis.call('ZREM', K_GQ, grant_member(g))
    if g.expires ~= 0 then
      redis.call('ZREM', K_GX, g.id)
    end
  end

  -- Makes a grant's remaining spendable. It first repays overdraft used (lines grant ->
  -- overdraft, appended to `lines`); what is left joins the draw order.
  function grant_activate(g, lines)
    local repay = math.min(g.remaining, -W.od)
    if repay > 0 then
      g.remaining = g.remaining - repay
      W.od = W.od + repay
      lines[#lines + 1] = line(grant_account(g.id), -repay)
      lines[#lines + 1] = line(OVERDRAFT_ACCOUNT, repay)
      grant_touched(g)
    end
    if g.remaining > 0 then
      W.active = W.active + g.remaining
      grant_save(g)
      redis.call('ZADD', K_GQ, 0, grant_member(g))
      if g.expires ~= 0 then
        redis.call('ZADD', K_GX, fmt(g.expires), g.id)
        due_at(g.expires)
      end
    else
      redis.call('HDEL', K_G, g.id) -- wholly spent on the overdraft
    end
    M.changed = true
  end

  -- An active grant's expiry: its remainder leaves to expired:<asset> (never spent later).
  function grant_expire(g)
    W.active = W.active - g.remaining
    add_entry(nil, 'expiry', '', '{}', {line(grant_account(g.id), -g.remaining),
      line('expired:' .. W.asset, g.remaining)})
    grant_remove(g)
    g.remaining, g.expired = 0, true
    grant_touched(g)
  end

  -- Sum of the pending grants' remaining (for range checks of wallet totals).
  function pending_total()
    local total = 0
    for _, id in ipairs(redis.call('ZRANGE', K_GP, 0, -1)) do
      total = total + grant_get(id).remaining
    end
    return total
  end

  -- Spends `amount`: from the active grants in drawdown order, the rest from the overdraft;
  -- appends the lines (revenue included) to `lines`. The caller has checked that available()
  -- covers it, which keeps overdraft used >= -limit. Returns the draws (encoded
  -- [grant, amount] pairs) and the amount taken from the overdraft.
  function spend(amount, lines)
    local left, draws = amount, {}
    while left > 0 do
      local members = redis.call('ZRANGE', K_GQ, 0, 15)
      if #members == 0 then
        break
      end
      for _, member in ipairs(members) do
        local g = grant_get(string.sub(member, MEMBER_ID_AT))
        local take = math.min(g.remaining, left)
        g.remaining = g.remaining - take
        W.active = W.active - take
        left = left - take
        lines[#lines + 1] = line(grant_account(g.id), -take)
        draws[#draws + 1] = cjson.encode({g.id, fmt(take)})
        grant_touched(g)
        if g.remaining == 0 then
          grant_remove(g)
        else
          grant_save(g)
        end
        if left == 0 then
          break
        end
      end
    end
    if left > 0 then
      W.od = W.od - left
      lines[#lines + 1] = line(OVERDRAFT_ACCOUNT, -left)
    end
    if amount > 0 then
      lines[#lines + 1] = line('revenue:' .. W.asset, amount)
    end
    return draws, left
  end

  -- Provider cost recorded beside a spend, in its own currency (COGS).
  function add_cost(lines, currency, amount)
    if currency ~= '' and amount > 0 then
      lines[#lines + 1] = {'cost:' .. currency, currency, fmt(amount)}
      lines[#lines + 1] = {'provider_payable:' .. currency, currency, fmt(-amount)}
    end
  end
end

-- Hold records read back, saved and closed: defined on first need, as need_grants().
local function need_holds()
  if hold_unpack then
    return
  end
  function hold_unpack(id, record)
    local f = split(record, 9)
    return {id = id, state = f[1], authorized = tonumber(f[2]), debited = tonumber(f[3]),
      captured = tonumber(f[4]), expires = tonumber(f[5]), created = tonumber(f[6]),
      closed = tonumber(f[7]) or 0, ttl = tonumber(f[8]), rid = f[9]}
  end

  -- An open hold, or nil.
  function hold_get(id)
    local record = redis.call('HGET', K_HO, id)
    return record and hold_unpack(id, record)
  end

  -- Saves an open hold whose amounts or expiry changed: its record in ho and in
  -- {p}:h:<hold> (kept until the new expiry plus the retention, in seconds) and its place
  -- in the expiry order. The expiry only moves later, so the wallet's due time stays valid.
  function hold_save(h, hold_key, retention_s)
    local record = hold_pack(h)
    redis.call('HSET', K_HO, h.id, record)
    redis.call('SET', hold_key, record, 'PXAT', fmt(h.expires + tonumber(retention_s) * 1000))
    redis.call('ZADD', K_HX, fmt(h.expires), h.id)
    hold_touched(h)
  end

  -- Closes an open hold: its remaining reservation leaves `held`.
  function hold_close(h, state, closed_ms)
    W.held = W.held - (h.authorized - h.debited)
    redis.call('HDEL', K_HO, h.id)
    redis.call('ZREM', K_HX, h.id)
    h.state, h.closed = state, closed_ms
    hold_touched(h)
  end

  -- Why a hold that is not open cannot be captured or voided, from its {p}:h:<hold>.
  function closed_hold_reason(hold_key)
    local record = redis.call('GET', hold_key)
    if not record then
      return 'UNKNOWN_HOLD'
    end
    local state = split(record, 2)[1]
    if state == 'captured' then
      return 'HOLD_ALREADY_CAPTURED'
    elseif state == 'voided' then
      return 'HOLD_VOIDED'
    end
    return 'HOLD_EXPIRED'
  end
end

-- ---- settling time ----

-- Activates pending grants (effective <= now), expires grants and holds (expiry <= now);
-- one comparison while nothing is due.
local function settle()
  if W.due == 0 or W.due > NOW then
    return
  end
  need_grants()
  need_holds()
  local now = fmt(NOW)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_GP, '-inf', now)) do
    redis.call('ZREM', K_GP, id)
    local lines = {}
    grant_activate(grant_get(id), lines)
    if #lines > 0 then
      add_entry(nil, 'adjustment', '', REPAY_MEMO, lines)
    end
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_GX, '-inf', now)) do
    grant_expire(grant_get(id))
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_HX, '-inf', now)) do
    local h = hold_get(id)
    hold_close(h, 'expired', h.expires)
    add_entry(nil, 'release', '', cjson.encode({hold_id = id, reason = 'expired'}), {})
  end
  due_recompute()
end

-- ---- results and the commit ----

local function balance_fields(fields)
  fields.asset, fields.active, fields.od = W.asset, fmt(W.active), fmt(W.od)
  fields.held, fields.limit, fields.version = fmt(W.held), fmt(W.limit), fmt(W.ver)
  fields.frozen = W.frozen and '1' or '0'
  fields.at = fmt(NOW)
  return fields
end

-- A mutation's encoded result: its string fields, the balance after it, the ids of the
-- entries it made, and named lists of already encoded items.
local function result_json(fields, lists)
  local out = string.sub(cjson.encode(balance_fields(fields)), 1, -2)
  out = out .. ',"entries":' .. json_list(M.entry_ids)
  for name, items in pairs(lists or {}) do
    out = out .. ',"' .. name .. '":' .. json_list(items)
  end
  return out .. '}'
end

local function grant_json(g)
  return cjson.encode({id = g.id, kind = g.kind, amount = fmt(g.amount),
    remaining = fmt(g.remaining), refunded = fmt(g.refunded), priority = fmt(g.priority),
    effective = fmt(g.effective), expires = fmt(g.expires), created = fmt(g.created),
    expired = g.expired and '1' or '0', version = fmt(W.ver)})
end

local function hold_json(h)
  local closed = ''
  if h.closed ~= 0 then
    closed = fmt(h.closed)
  end
  return cjson.encode({id = h.id, state = h.state, authorized = fmt(h.authorized),
    debited = fmt(h.debited), captured = fmt(h.captured), expires = fmt(h.expires),
    created = fmt(h.created), closed = closed, ttl = fmt(h.ttl), rid = h.rid,
    version = fmt(W.ver)})
end

-- Ends a call. When anything changed: bumps the wallet's version (grants and holds touched
-- take it as theirs), builds the result (make_result, optional), writes the counters back,
-- appends the one stream message and publishes the new balance. Returns the result ('').
local function commit(op, rid, hash, make_result)
  local result = ''
  if not M.changed then
    if W.due_dirty then
      redis.call('HSET', K_W, 'due', fmt(W.due))
    end
    return result
  end
  W.ver = W.ver + 1
  if make_result then
    result = make_result()
  end
  redis.call('HSET', K_W, 'active', fmt(W.active), 'od', fmt(W.od), 'held', fmt(W.held),
    'limit', fmt(W.limit), 'frozen', W.frozen and '1' or '0', 'seq', fmt(W.seq),
    'ver', fmt(W.ver), 'due', fmt(W.due))
  local grants, holds = {}, {}
  for i, id in ipairs(M.grant_order) do
    grants[i] = grant_json(M.grants[id])
  end
  for i, h in ipairs(M.holds) do
    holds[i] = hold_json(h)
  end
  local wallet = cjson.encode({asset = W.asset, active = fmt(W.active), od = fmt(W.od),
    held = fmt(W.held), frozen = W.frozen and '1' or '0', limit = fmt(W.limit),
    seq = fmt(W.seq), version = fmt(W.ver)})
  -- The idempotency record travels as `hash` and `result` ('' and '' when there is none).
  if result == '' then
    hash = ''
  end
  redis.call('XADD', K_LEDGER, '*', 'op', op, 'w', WALLET_ID, 'rid', rid, 'now', fmt(NOW),
    'entries', json_list(M.entries), 'grants', json_list(grants), 'holds', json_list(holds),
    'wallet', wallet, 'hash', hash, 'result', result)
  redis.call('PUBLISH', 'obol:balance:' .. WALLET_ID,
    cjson.encode({version = fmt(W.ver), available = fmt(available())}))
  return result
end

-- ---- the frame of a mutation ----

-- Before a mutation: fail closed, answer a replay (idempotency, in the same atomic step as
-- the change), refuse under backpressure (backlog_limit nil: never), then settle time.
-- Returns a reply to send at once, or nil to go on.
local function begin(idem_key, hash, backlog_limit)
  if not W then
    return NOT_HYDRATED
  end
  local stored = redis.call('GET', idem_key)
  if stored then
    local bar = string.find(stored, '|', 1, true)
    if string.sub(stored, 1, bar - 1) ~= hash then
      return {'err', 'IDEMPOTENCY_KEY_REUSED'}
    end
    return {'replay', string.sub(stored, bar + 1)}
  end
  if backlog_limit then
    local backlog = redis.call('XLEN', K_LEDGER)
    if backlog > tonumber(backlog_limit) then
      return {'err', 'BACKPRESSURE', 'backlog', fmt(backlog), 'limit', backlog_limit}
    end
  end
  settle()
  return nil
end

-- Refuses the operation; what settling time changed is still committed.
local function fail(reason, ...)
  commit('expire', '', '', nil)
  return {'err', reason, ...}
end

-- Commits a successful mutation and records its result for replays (TTL in seconds).
local function finish(op, rid, hash, idem_key, ttl, make_result)
  local result = commit(op, rid, hash, make_result)
  redis.call('SET', idem_key, hash .. '|' .. result, 'EX', ttl)
  return {'ok', result}
end
