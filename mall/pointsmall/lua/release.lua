-- A pending redemption is settled: its reservation leaves `res`; when the database
-- refused it (released), its units and limits go back first, once per reservation id
-- (the kit's give-back-once: the `returned` set). The helpers of mall.kit.stock come first.
local META, STOCK, RETURNED, RES, BUYERS, PERIOD = 1, 2, 3, 4, 5, 6
-- KEYS: meta, stock, returned, res, buyers, the period counter it counted in
-- ARGV: 1 reservation id, 2 '1' to give the units back, 3 member, 4 qty
-- Replies: ok|units left ('' if none given) | dup (given back before) | cold
redis.call('HDEL', KEYS[RES], ARGV[1])
if ARGV[2] ~= '1' then return reply('ok', '') end
if is_cold(META) then return reply('cold') end
if not first_time(RETURNED, ARGV[1]) then return reply('dup') end
local n = tonumber(ARGV[4])
count_down(BUYERS, ARGV[3], n)
if redis.call('EXISTS', KEYS[PERIOD]) == 1 then count_down(PERIOD, ARGV[3], n) end
return reply('ok', put_units(STOCK, '', n) or '')
