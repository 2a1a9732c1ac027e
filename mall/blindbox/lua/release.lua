-- A released draw's guarantee counter goes back to what it was before that draw, but
-- only while that draw is still the member's latest in the series (a later draw built
-- on the counter and keeps it). Run once, after kit give_back handed its unit back.
-- The helpers of mall.kit.stock come first.
local PITY, LAST = 1, 2
-- KEYS: pity, last (member -> seq of their latest draw)
-- ARGV: 1 member, 2 the released draw's seq, 3 its pity before
-- Replies: ok (restored) | kept
if redis.call('HGET', KEYS[LAST], ARGV[1]) ~= ARGV[2] then return reply('kept') end
redis.call('HSET', KEYS[PITY], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[LAST], ARGV[1])
return reply('ok')
