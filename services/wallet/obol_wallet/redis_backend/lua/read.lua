-- read.lua: settle time, then read the wallet (balance, grants) or only settle (sweep).
-- ARGV[4] mode: 'balance', 'grants' or 'sweep'.
-- Reply: {'ok', balance JSON} and, for 'grants', grant id / record pairs in drawdown
-- order (active first, then pending by effective time).
local MODE = ARGV[4]

if not W then
  if MODE == 'sweep' then
    redis.call('ZREM', K_DUE, WALLET_ID) -- nothing to settle until it is hydrated again
  end
  return NOT_HYDRATED
end
settle()
commit('expire', '', '', nil)
local reply = {'ok', cjson.encode(balance_fields({}))}
if MODE == 'grants' then
  for _, member in ipairs(redis.call('ZRANGE', K_GQ, 0, -1)) do
    local id = string.sub(member, MEMBER_ID_AT)
    reply[#reply + 1] = id
    reply[#reply + 1] = redis.call('HGET', K_G, id)
  end
  for _, id in ipairs(redis.call('ZRANGE', K_GP, 0, -1)) do
    reply[#reply + 1] = id
    reply[#reply + 1] = redis.call('HGET', K_G, id)
  end
end
return reply
