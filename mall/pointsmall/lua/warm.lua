-- Load an item's stock and limit counters from the database figures, only if its
-- stock key is missing (first shelf, or Redis lost its data). A missing stock key
-- means the other keys are stale too, so they are replaced.
-- KEYS: 1 stock, 2 buyers, 3 resv, 4 resvinfo, 5 ver, 6 period counter
-- ARGV: 1 stock, 2 period ttl, 3 number of buyer pairs, then member, units pairs for
--       buyers, then member, units pairs for the current period.
-- Returns 1 if it loaded, 0 if the item was already warm.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[6])
redis.call('SET', KEYS[1], ARGV[1])
local nbuyers = tonumber(ARGV[3])
local i = 4
for _ = 1, nbuyers do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local wrote_period = false
while i < #ARGV do
  redis.call('HSET', KEYS[6], ARGV[i], ARGV[i + 1])
  wrote_period = true
  i = i + 2
end
if wrote_period then redis.call('EXPIRE', KEYS[6], ARGV[2]) end
redis.call('INCR', KEYS[5])
return 1
