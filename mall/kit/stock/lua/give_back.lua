-- Hand units back to a pool, exactly once per reservation id.
-- KEYS: 1 meta, 2 stock, 3 returned (set of the reservation ids given back),
--       4.. per-member counters the reservation counted in (each goes down by n)
-- ARGV: 1 reservation id, 2 unit ('' when the stock key is a string), 3 n, 4 member
-- Returns cold (not loaded: nothing done, the next warm counts from the database) |
--   dup (given back before) | ok|units left ('' when the pool does not count units)
if is_cold(1) then return reply('cold') end
if not first_time(3, ARGV[1]) then return reply('dup') end
local n = tonumber(ARGV[3])
for k = 4, #KEYS do count_down(k, ARGV[4], n) end
return reply('ok', put_units(2, ARGV[2], n) or '')
