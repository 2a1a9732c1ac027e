-- One consistent read of an item's Redis state for the reconciler.
-- KEYS: 1 stock, 2 resv, 3 resvinfo, 4 ver
-- Returns {stock or -1 if not warmed, ver, id1, info1, id2, info2, ...}
local stock = redis.call('GET', KEYS[1])
local out = {stock and tonumber(stock) or -1, tonumber(redis.call('GET', KEYS[4]) or '0')}
for _, v in ipairs(redis.call('HGETALL', KEYS[3])) do out[#out + 1] = v end
return out
