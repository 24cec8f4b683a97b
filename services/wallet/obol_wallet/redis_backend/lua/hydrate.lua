-- hydrate.lua: load a wallet's hot state from a snapshot, only if it is not hydrated.
-- ARGV[4] asset, [5] overdraft limit, [6] overdraft used, [7] frozen ('0'/'1'), [8] seq,
-- [9] version, [10] number of grants, then per grant: id, remaining, amount, priority,
-- effective, expires, kind, created, refunded; then the number of open holds and per
-- hold: id, authorized, debited, expires, created, ttl, request id.
-- The holds' records and the idempotency records are loaded before (hydrate_records.lua):
-- `hydrated` is set last, in this call, so nothing is served before all of it is there.
-- So is the auto top-up attempt in flight that hydrate_records.lua staged (`tu_stage`):
-- it becomes `tu_pend` here, so no spend ever sees the rebuilt wallet without it (and
-- starts a second attempt); anything else left in the hash (a stale `tu_pend` of a
-- partial state included) goes. The rule's mirror (the other tu_* fields) follows, by
-- top_up_rule.lua.
-- Nothing is settled here: the next call settles time with its own clock.
-- Reply {'ok', '1' loaded | '0' already hydrated}.
need_grants()
if W then
  return {'ok', '0'}
end
local staged = redis.call('HGET', K_W, 'tu_stage')
redis.call('DEL', K_W, K_G, K_GQ, K_GP, K_GX, K_HX, K_HO) -- leftovers of a partial state
redis.call('ZREM', K_DUE, WALLET_ID)
W = {asset = ARGV[4], limit = tonumber(ARGV[5]), od = tonumber(ARGV[6]), held = 0, active = 0,
  frozen = ARGV[7] == '1', seq = tonumber(ARGV[8]), ver = tonumber(ARGV[9]), due = 0,
  due_dirty = false}

local at = 10
for _ = 1, tonumber(ARGV[at]) do
  local g = {id = ARGV[at + 1], remaining = tonumber(ARGV[at + 2]),
    amount = tonumber(ARGV[at + 3]), priority = tonumber(ARGV[at + 4]),
    effective = tonumber(ARGV[at + 5]), expires = tonumber(ARGV[at + 6]), kind = ARGV[at + 7],
    created = tonumber(ARGV[at + 8]), refunded = tonumber(ARGV[at + 9])}
  grant_save(g)
  if g.effective <= NOW then
    W.active = W.active + g.remaining
    redis.call('ZADD', K_GQ, 0, grant_member(g))
    if g.expires ~= 0 then
      redis.call('ZADD', K_GX, fmt(g.expires), g.id)
    end
  else
    redis.call('ZADD', K_GP, fmt(g.effective), g.id)
  end
  at = at + 9
end
at = at + 1
for _ = 1, tonumber(ARGV[at]) do
  local h = {state = 'open', authorized = tonumber(ARGV[at + 2]),
    debited = tonumber(ARGV[at + 3]), captured = 0, expires = tonumber(ARGV[at + 4]),
    created = tonumber(ARGV[at + 5]), closed = 0, ttl = tonumber(ARGV[at + 6]),
    rid = ARGV[at + 7]}
  redis.call('HSET', K_HO, ARGV[at + 1], hold_pack(h))
  redis.call('ZADD', K_HX, fmt(h.expires), ARGV[at + 1])
  W.held = W.held + h.authorized - h.debited
  at = at + 7
end
due_recompute()
redis.call('HSET', K_W, 'asset', W.asset, 'limit', fmt(W.limit), 'od', fmt(W.od),
  'held', fmt(W.held), 'active', fmt(W.active), 'frozen', W.frozen and '1' or '0',
  'seq', fmt(W.seq), 'ver', fmt(W.ver), 'due', fmt(W.due), 'hydrated', '1')
if staged and staged ~= '' then
  redis.call('HSET', K_W, 'tu_pend', staged)
end
return {'ok', '1'}
