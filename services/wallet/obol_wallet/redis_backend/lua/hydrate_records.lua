-- hydrate_records.lua: before hydrate.lua, load a wallet's open-hold records and
-- idempotency records, unless the wallet is already hydrated (then nothing is written).
-- Standalone (no common.lua). KEYS[1] the wallet hash; KEYS[2..] one key per record.
-- ARGV per record, in KEYS order: 'h', record (see common.lua), expire-at (ms): an open
-- hold's {p}:h:<hold>; or 'i', value ('<hash>|<result>'), TTL (ms): an idempotency
-- record. A record already present is kept.
-- Reply 1 if loaded, 0 if the wallet was hydrated.
if redis.call('HEXISTS', KEYS[1], 'hydrated') == 1 then
  return 0
end
local at = 1
for i = 2, #KEYS do
  if ARGV[at] == 'h' then
    redis.call('SET', KEYS[i], ARGV[at + 1], 'PXAT', ARGV[at + 2], 'NX')
  else
    redis.call('SET', KEYS[i], ARGV[at + 1], 'PX', ARGV[at + 2], 'NX')
  end
  at = at + 3
end
return 1
