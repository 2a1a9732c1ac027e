-- A draw is recorded in the database: release the member's in-flight slot.
-- KEYS: 1 inflight. ARGV: 1 member, 2 draw id
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then return 0 end
if string.sub(rec, 1, #ARGV[2] + 1) ~= ARGV[2] .. '|' then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
