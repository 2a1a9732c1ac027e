-- Add (or take away) units of a limited prize; never below zero.
-- KEYS: 1 stock. ARGV: 1 prize id, 2 delta
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {'missing'} end
local delta = tonumber(ARGV[2])
if tonumber(cur) + delta < 0 then return {'short', tonumber(cur)} end
return {'ok', redis.call('HINCRBY', KEYS[1], ARGV[1], delta)}
