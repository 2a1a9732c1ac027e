-- Undo a draw whose points spend failed: the prize unit, the day's count and the
-- guarantee counter go back. Only the member's own in-flight draw is undone, once.
-- KEYS: 1 stock, 2 pity, 3 day (the day the draw counted on), 4 inflight
-- ARGV: 1 member, 2 draw id
local rec = redis.call('HGET', KEYS[4], ARGV[1])
if not rec then return 0 end
local parts = {}
for piece in string.gmatch(rec, '[^|]+') do parts[#parts + 1] = piece end
if parts[1] ~= ARGV[2] then return 0 end
if redis.call('HEXISTS', KEYS[1], parts[2]) == 1 then
  redis.call('HINCRBY', KEYS[1], parts[2], 1)
end
redis.call('HSET', KEYS[2], ARGV[1], parts[3])
local left = redis.call('HINCRBY', KEYS[3], ARGV[1], -1)
if left <= 0 then redis.call('HDEL', KEYS[3], ARGV[1]) end
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
