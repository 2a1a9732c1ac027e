-- Decide one redemption: per-member limits (total, per period) and stock, then hold
-- the units in a reservation that expires unless confirmed.
-- KEYS: 1 stock, 2 buyers (member -> units), 3 resv (zset id -> expiry ms),
--       4 resvinfo (id -> "member|qty|periodkey"), 5 ver, 6 period counter
-- ARGV: 1 member, 2 qty, 3 limit total (0 none), 4 limit per period (0 none),
--       5 reservation id, 6 expiry ms, 7 period key ttl seconds,
--       8 "1" when the item counts units per period (KEYS[6] is a real period key)
-- Returns {code, n}: 1 ok (n = stock left), -1 not warmed, -2 limit reached (n = held),
--   -3 period limit reached (n = held), -4 out of stock (n = stock), -5 duplicate id
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local member = ARGV[1]
local qty = tonumber(ARGV[2])
local limit_total = tonumber(ARGV[3])
local limit_period = tonumber(ARGV[4])
if redis.call('ZSCORE', KEYS[3], ARGV[5]) then return {-5, 0} end
if limit_total > 0 then
  local held = tonumber(redis.call('HGET', KEYS[2], member) or '0')
  if held + qty > limit_total then return {-2, held} end
end
if limit_period > 0 then
  local held = tonumber(redis.call('HGET', KEYS[6], member) or '0')
  if held + qty > limit_period then return {-3, held} end
end
local stock = tonumber(redis.call('GET', KEYS[1]))
if stock < qty then return {-4, stock} end
redis.call('DECRBY', KEYS[1], qty)
redis.call('HINCRBY', KEYS[2], member, qty)
local pkey = ''
if ARGV[8] == '1' then
  redis.call('HINCRBY', KEYS[6], member, qty)
  redis.call('EXPIRE', KEYS[6], ARGV[7])
  pkey = KEYS[6]
end
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
redis.call('HSET', KEYS[4], ARGV[5], member .. '|' .. qty .. '|' .. pkey)
redis.call('INCR', KEYS[5])
return {1, stock - qty}
