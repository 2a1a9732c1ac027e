-- Stock, initial, buyers and the stream backlog of an item read at one instant.
-- KEYS: 1 meta, 2 stock, 3 buyers, 4 wins (stream)
-- Returns {stock|false, initial|false, buyers (flat member,count list), entries}
local stock = redis.call('GET', KEYS[2])
local initial = redis.call('HGET', KEYS[1], 'initial')
local buyers = redis.call('HGETALL', KEYS[3])
local entries = redis.call('XRANGE', KEYS[4], '-', '+')
return {stock, initial, buyers, entries}
