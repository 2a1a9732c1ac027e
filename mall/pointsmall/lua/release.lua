-- Pending redemptions of one item are settled, many in one call (a batch of the
-- consumer): each reservation leaves `res`; one the database refused (released) gives
-- its units and limits back first, once per reservation id (the kit's give-back-once:
-- the `returned` set). In the order given, as if called once each. The helpers of
-- mall.kit.stock come first.
local META, STOCK, RETURNED, RES, BUYERS = 1, 2, 3, 4, 5
-- KEYS: meta, stock, returned, res, buyers, then the period counters the reservations
--   counted in (all under the item's hash tag)
-- ARGV: per reservation 5 values: its id, '1' to give the units back, member, qty, the
--   index in KEYS of its period counter
-- Reply: ok|<one per reservation, joined by ','>: ok:<units left> ('ok:' if none given
--   back) | dup (given back before) | cold
local function settle(resv, give_back, member, qty, period)
  redis.call('HDEL', KEYS[RES], resv)
  if give_back ~= '1' then return 'ok:' end
  if is_cold(META) then return 'cold' end
  if not first_time(RETURNED, resv) then return 'dup' end
  local n = tonumber(qty)
  count_down(BUYERS, member, n)
  if redis.call('EXISTS', KEYS[period]) == 1 then count_down(period, member, n) end
  return 'ok:' .. (put_units(STOCK, '', n) or '')
end

local out = {}
for i = 1, #ARGV, 5 do
  out[#out + 1] = settle(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]))
end
return reply('ok', table.concat(out, ','))
