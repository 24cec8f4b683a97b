-- open.lua: create a wallet's hot state, empty and hydrated, if absent (idempotent).
-- ARGV[4] asset code, [5] overdraft limit. Reply {'ok', '1' created | '0' existed}.
-- A wallet that exists with another asset is refused (ASSET_MISMATCH); a hash without
-- `hydrated` is a lost or partial hot state: never replaced by an empty one (rebuild it).
local ASSET, LIMIT = ARGV[4], ARGV[5]

if W then
  if W.asset ~= ASSET then
    return {'err', 'ASSET_MISMATCH', 'expected_asset_code', W.asset}
  end
  return {'ok', '0'}
end
if redis.call('EXISTS', K_W) == 1 then
  return NOT_HYDRATED
end
redis.call('HSET', K_W, 'asset', ASSET, 'limit', LIMIT, 'od', '0', 'held', '0', 'active', '0',
  'frozen', '0', 'seq', '0', 'ver', '0', 'due', '0', 'hydrated', '1')
return {'ok', '1'}
