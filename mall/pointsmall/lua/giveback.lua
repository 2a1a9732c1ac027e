-- A committed redemption was cancelled in the database: return its units and limits.
-- KEYS: 1 stock, 2 buyers, 3 resv, 4 resvinfo, 5 ver, 6 period counter of the redemption
-- ARGV: 1 member, 2 qty. Returns 1, or 0 when the item is not warmed (the next warm-up
-- reads the database, which already has the cancellation).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local qty = tonumber(ARGV[2])
redis.call('INCRBY', KEYS[1], qty)
if redis.call('HINCRBY', KEYS[2], ARGV[1], -qty) <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
if redis.call('EXISTS', KEYS[6]) == 1 then
  if redis.call('HINCRBY', KEYS[6], ARGV[1], -qty) <= 0 then redis.call('HDEL', KEYS[6], ARGV[1]) end
end
redis.call('INCR', KEYS[5])
return 1
