-- Decide one redemption: per-member limits (total, per period) and stock, then hold
-- the units in a reservation that expires unless confirmed. The helpers of
-- mall.kit.stock come first.
local META, STOCK, BUYERS, RESV, RESVINFO, PERIOD = 1, 2, 3, 4, 5, 6
-- KEYS: meta, stock, buyers (member -> units), resv (zset id -> expiry ms),
--       resvinfo (id -> "member|qty|periodkey"), period counter (member -> units)
-- ARGV: 1 member, 2 qty, 3 limit total (0 none), 4 limit per period (0 none),
--       5 reservation id, 6 expiry ms, 7 period key ttl seconds,
--       8 "1" when the item counts units per period (KEYS[PERIOD] is a real period key)
-- Replies: ok|units left | cold | limit|held | period_limit|held | sold_out|units left |
--   dup (this reservation id is already held)
if is_cold(META) then return reply('cold') end
local member = ARGV[1]
local qty = tonumber(ARGV[2])
local limit_total = tonumber(ARGV[3])
local limit_period = tonumber(ARGV[4])
if redis.call('ZSCORE', KEYS[RESV], ARGV[5]) then return reply('dup') end
if limit_total > 0 then
  local held = tonumber(redis.call('HGET', KEYS[BUYERS], member) or '0')
  if held + qty > limit_total then return reply('limit', held) end
end
if limit_period > 0 then
  local held = tonumber(redis.call('HGET', KEYS[PERIOD], member) or '0')
  if held + qty > limit_period then return reply('period_limit', held) end
end
local stock = units_left(STOCK, '') or 0
if stock < qty then return reply('sold_out', stock) end
take_units(STOCK, '', qty)
count_up(BUYERS, member, qty)
local pkey = ''
if ARGV[8] == '1' then
  count_up(PERIOD, member, qty)
  redis.call('EXPIRE', KEYS[PERIOD], ARGV[7])
  pkey = KEYS[PERIOD]
end
redis.call('ZADD', KEYS[RESV], ARGV[6], ARGV[5])
redis.call('HSET', KEYS[RESVINFO], ARGV[5], member .. '|' .. qty .. '|' .. pkey)
return reply('ok', stock - qty)
