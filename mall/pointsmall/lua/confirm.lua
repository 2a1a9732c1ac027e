-- The reservation's database write committed: it no longer holds anything pending.
-- The helpers of mall.kit.stock come first.
local RESV, RESVINFO = 1, 2
-- KEYS: resv, resvinfo. ARGV: 1 reservation id
-- Replies: ok (it was pending) | gone (already confirmed or released)
local n = redis.call('ZREM', KEYS[RESV], ARGV[1])
redis.call('HDEL', KEYS[RESVINFO], ARGV[1])
if n == 1 then return reply('ok') end
return reply('gone')
