-- The reservation's database write committed: it no longer holds anything pending.
-- KEYS: 1 stock, 2 buyers, 3 resv, 4 resvinfo, 5 ver, 6 period counter
-- ARGV: 1 reservation id. Returns 1 if it was pending, 0 if already confirmed or returned.
local n = redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if n == 1 then redis.call('INCR', KEYS[5]) end
return n
