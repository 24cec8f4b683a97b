-- hydrate_records.lua: before hydrate.lua, load a wallet's open-hold records and
-- idempotency records, unless the wallet is already hydrated (then nothing is written).
-- Standalone (no common.lua). KEYS[1] the wallet hash; KEYS[2..] one key per record.
-- ARGV per record, in KEYS order: 'h', wallet id, authorized, expires, created,
-- request id, expire-at (ms): an open hold's {p}:h:<hold>; or 'i', value
-- ('<hash>|<result>'), TTL (ms): an idempotency record, kept if already present.
-- Reply 1 if loaded, 0 if the wallet was hydrated.
if redis.call('HEXISTS', KEYS[1], 'hydrated') == 1 then
  return 0
end
local at = 1
for i = 2, #KEYS do
  if ARGV[at] == 'h' then
    redis.call('HSET', KEYS[i], 'w', ARGV[at + 1], 'state', 'open', 'amount', ARGV[at + 2],
      'exp', ARGV[at + 3], 'created', ARGV[at + 4], 'rid', ARGV[at + 5])
    redis.call('PEXPIREAT', KEYS[i], ARGV[at + 6])
    at = at + 7
  else
    redis.call('SET', KEYS[i], ARGV[at + 1], 'PX', ARGV[at + 2], 'NX')
    at = at + 3
  end
end
return 1
