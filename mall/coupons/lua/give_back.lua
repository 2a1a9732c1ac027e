-- Undo a win whose database write failed. KEYS as in take.lua; ARGV[1] member, ARGV[2] n.
local n = tonumber(ARGV[2])
local issued = tonumber(redis.call('GET', KEYS[2]) or '0')
redis.call('SET', KEYS[2], math.max(issued - n, 0))
local held = redis.call('HINCRBY', KEYS[3], ARGV[1], -n)
if held <= 0 then redis.call('HDEL', KEYS[3], ARGV[1]) end
return 1
