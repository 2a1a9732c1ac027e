-- Release a pending reservation (its database write failed or never happened): its
-- units return to stock and to the member's limits, once. The helpers of
-- mall.kit.stock come first.
local STOCK, BUYERS, RESV, RESVINFO, PERIOD = 1, 2, 3, 4, 5
-- KEYS: stock, buyers, resv, resvinfo, the period counter the reservation counted in
-- ARGV: 1 reservation id
-- Replies: ok (given back) | gone (it was not pending)
if redis.call('ZREM', KEYS[RESV], ARGV[1]) == 0 then
  redis.call('HDEL', KEYS[RESVINFO], ARGV[1])
  return reply('gone')
end
local info = redis.call('HGET', KEYS[RESVINFO], ARGV[1])
redis.call('HDEL', KEYS[RESVINFO], ARGV[1])
if not info then return reply('gone') end
local member, qty, pkey = string.match(info, '^([^|]*)|([^|]*)|(.*)$')
qty = tonumber(qty)
put_units(STOCK, '', qty)
count_down(BUYERS, member, qty)
if pkey ~= '' and pkey == KEYS[PERIOD] and redis.call('EXISTS', KEYS[PERIOD]) == 1 then
  count_down(PERIOD, member, qty)
end
return reply('ok')
