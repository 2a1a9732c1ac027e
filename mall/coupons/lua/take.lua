-- Decide one issue of a coupon template: the total quantity, and for shopper claims the
-- claim window and the per-member limit. Nothing is written unless it is a win. The
-- helpers of mall.kit.stock come first.
local META, STOCK, BUYERS = 1, 2, 3
-- KEYS: meta (hash: per_member active claimable starts ends unlimited, initial),
--       stock (units left: the total quantity less those issued; counts on below zero
--       for an unlimited template), buyers (member -> coupons held)
-- ARGV: 1 member id, 2 now (unix seconds), 3 how many,
--       4 '1' for a shopper claim (window, claimable and per-member limit apply)
-- Replies: ok|units left | cold | inactive | not_claimable | not_started | ended |
--   sold_out|units left | limit_reached|held
local m = redis.call('HMGET', KEYS[META], 'per_member', 'active', 'claimable', 'starts', 'ends', 'unlimited')
if not m[2] then return reply('cold') end
if m[2] ~= '1' then return reply('inactive') end
local n = tonumber(ARGV[3])
local claim = ARGV[4] == '1'
if claim then
  if m[3] ~= '1' then return reply('not_claimable') end
  local now = tonumber(ARGV[2])
  if m[4] and m[4] ~= '' and now < tonumber(m[4]) then return reply('not_started') end
  if m[5] and m[5] ~= '' and now >= tonumber(m[5]) then return reply('ended') end
end
local left = units_left(STOCK, '')
if left == nil then return reply('cold') end
if m[6] ~= '1' and left < n then return reply('sold_out', left) end
if claim then
  local held = tonumber(redis.call('HGET', KEYS[BUYERS], ARGV[1]) or '0')
  if held + n > tonumber(m[1]) then return reply('limit_reached', held) end
end
count_up(BUYERS, ARGV[1], n)
return reply('ok', take_units(STOCK, '', n))
