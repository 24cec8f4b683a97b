-- hydrate_records.lua: before hydrate.lua, load a wallet's open-hold records and
-- idempotency records, and stage its auto top-up attempt in flight, unless the wallet is
-- already hydrated (then nothing is written).
-- Standalone (no common.lua). KEYS[1] the wallet hash; KEYS[2..] one key per record.
-- ARGV per record, in KEYS order:
--   'h', record (see common.lua), expire-at (ms): an open hold's {p}:h:<hold>;
--   'i', value ('<hash>|<result>'), TTL (ms): an idempotency record (a record already
--        present is kept);
--   't', attempt id, wallet id, asset, amount, payment method, created (ms), with the key
--        {p}:topups (top_up.lua): the attempt Postgres holds as pending (`obol rebuild`,
--        docs/decisions.md D13). It is staged in the wallet hash as `tu_stage`, which
--        hydrate.lua turns into `tu_pend` in the call that sets `hydrated` (so no spend
--        ever sees the wallet without it), and queued again for the top-up worker (the
--        message top_up.lua writes; a run of the attempt still in the queue is harmless:
--        the worker runs an attempt idempotently). An empty attempt id (nothing pending)
--        clears a stage left by an earlier, interrupted rebuild and queues nothing.
-- Reply 1 if loaded, 0 if the wallet was hydrated.
if redis.call('HEXISTS', KEYS[1], 'hydrated') == 1 then
  return 0
end
local at = 1
for i = 2, #KEYS do
  local kind = ARGV[at]
  if kind == 'h' then
    redis.call('SET', KEYS[i], ARGV[at + 1], 'PXAT', ARGV[at + 2], 'NX')
    at = at + 3
  elseif kind == 'i' then
    redis.call('SET', KEYS[i], ARGV[at + 1], 'PX', ARGV[at + 2], 'NX')
    at = at + 3
  elseif kind == 't' then
    local id = ARGV[at + 1]
    if id == '' then
      redis.call('HDEL', KEYS[1], 'tu_stage')
    else
      redis.call('HSET', KEYS[1], 'tu_stage', id)
      redis.call('XADD', KEYS[i], '*', 'type', 'attempt', 'w', ARGV[at + 2], 'id', id,
        'asset', ARGV[at + 3], 'amount', ARGV[at + 4], 'pm', ARGV[at + 5], 'at', ARGV[at + 6])
    end
    at = at + 7
  else
    return redis.error_reply('hydrate_records: unknown record kind ' .. tostring(kind))
  end
end
return 1
