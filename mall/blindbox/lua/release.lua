-- Release a draw that was never recorded (its points spend failed, its request died):
-- the prize unit, the day's count and the guarantee counter go back. Only the member's
-- own in-flight draw is released, once. The helpers of mall.kit.stock come first.
local STOCK, PITY, DAY, INFLIGHT = 1, 2, 3, 4
-- KEYS: stock, pity, day (the day the draw counted on), inflight
-- ARGV: 1 member, 2 draw id
-- Replies: ok | gone (no such draw in flight)
local rec = redis.call('HGET', KEYS[INFLIGHT], ARGV[1])
if not rec then return reply('gone') end
local parts = {}
for piece in string.gmatch(rec, '[^|]+') do parts[#parts + 1] = piece end
if parts[1] ~= ARGV[2] then return reply('gone') end
put_units(STOCK, parts[2], 1)
redis.call('HSET', KEYS[PITY], ARGV[1], parts[3])
count_down(DAY, ARGV[1], 1)
redis.call('HDEL', KEYS[INFLIGHT], ARGV[1])
return reply('ok')
