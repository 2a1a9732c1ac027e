-- Move a pool's units by a delta: an ops change of the stock (the meta hash's 'initial'
-- moves with it) or the reconciler's repair of a measured drift.
-- KEYS: 1 meta, 2 stock
-- ARGV: 1 unit ('' when the stock key is a string), 2 delta, 3 '1' to move 'initial' too,
--       4 the least units left allowed after a decrease ('' = no floor)
-- Returns cold (not loaded: the database alone has the change; the next warm reads it) |
--   short|units left (the floor refuses it) | ok|units left
if is_cold(1) then return reply('cold') end
local unit, delta = ARGV[1], tonumber(ARGV[2])
local left = units_left(2, unit)
if left == nil then return reply('cold') end
if delta < 0 and ARGV[4] ~= '' and left + delta < tonumber(ARGV[4]) then
  return reply('short', left)
end
if ARGV[3] == '1' and unit == '' then redis.call('HINCRBY', KEYS[1], 'initial', delta) end
if delta > 0 then return reply('ok', put_units(2, unit, delta)) end
return reply('ok', take_units(2, unit, -delta))
