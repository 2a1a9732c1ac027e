-- Apply an ops stock delta; refuses to take stock below zero.
-- KEYS: 1 stock, 2 ver. ARGV: 1 delta.
-- Returns {1, stock after}, {0, stock} when it would go below zero, {-1, 0} if not warmed.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local stock = tonumber(redis.call('GET', KEYS[1]))
local delta = tonumber(ARGV[1])
if stock + delta < 0 then return {0, stock} end
redis.call('INCRBY', KEYS[1], delta)
redis.call('INCR', KEYS[2])
return {1, stock + delta}
