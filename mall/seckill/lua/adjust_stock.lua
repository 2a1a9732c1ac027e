-- Change the units on sale of a warm item by a delta; refused if stock would go negative.
-- KEYS: 1 meta, 2 stock.  ARGV: 1 delta
-- Returns {1, stock} done, {0, stock} refused, {-1, 0} not warm
if redis.call('EXISTS', KEYS[2]) == 0 then return {-1, 0} end
local delta = tonumber(ARGV[1])
local stock = tonumber(redis.call('GET', KEYS[2]))
if stock + delta < 0 then return {0, stock} end
redis.call('HINCRBY', KEYS[1], 'initial', delta)
return {1, redis.call('INCRBY', KEYS[2], delta)}
