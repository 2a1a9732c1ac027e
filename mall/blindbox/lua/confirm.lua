-- A draw is recorded in the database: release the member's in-flight slot.
-- The helpers of mall.kit.stock come first.
local INFLIGHT = 1
-- KEYS: inflight. ARGV: 1 member, 2 draw id
-- Replies: ok | gone (no such draw in flight)
local rec = redis.call('HGET', KEYS[INFLIGHT], ARGV[1])
if not rec then return reply('gone') end
if string.sub(rec, 1, #ARGV[2] + 1) ~= ARGV[2] .. '|' then return reply('gone') end
redis.call('HDEL', KEYS[INFLIGHT], ARGV[1])
return reply('ok')
