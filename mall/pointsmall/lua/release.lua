-- Pending redemptions of one item are settled, many in one call (a batch of the
-- consumer): each reservation leaves `res`; one the database refused (released) gives
-- its units and limits back first, once per reservation id (the kit's give-back-once:
-- the `returned` set). The helpers of mall.kit.stock come first.
local META, STOCK, RETURNED, RES, BUYERS = 1, 2, 3, 4, 5
-- KEYS: meta, stock, returned, res, buyers, then the period counters the reservations
--   given back counted in (all under the item's hash tag)
-- ARGV: 1 the number k of reservations kept (nothing to give back), 2..k+1 their ids,
--   then per reservation given back 4 values: its id, member, qty, the index in KEYS of
--   its period counter
-- Reply: ok|<one per reservation given back, in order, joined by ','>: ok:<units left>
--   | dup (given back before) | cold
local kept = tonumber(ARGV[1])
for i = 2, kept + 1, 1000 do  -- (unpack has a limit)
  redis.call('HDEL', KEYS[RES], unpack(ARGV, i, math.min(i + 999, kept + 1)))
end

local function give_back(resv, member, qty, period)
  redis.call('HDEL', KEYS[RES], resv)
  if is_cold(META) then return 'cold' end
  if not first_time(RETURNED, resv) then return 'dup' end
  local n = tonumber(qty)
  count_down(BUYERS, member, n)
  if redis.call('EXISTS', KEYS[period]) == 1 then count_down(period, member, n) end
  return 'ok:' .. (put_units(STOCK, '', n) or '')
end

local out = {}
for i = kept + 2, #ARGV, 4 do
  out[#out + 1] = give_back(ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]))
end
return reply('ok', table.concat(out, ','))
