-- Load a pool from the database's figures (the record of truth). A pool is cold while its
-- meta hash is missing. Terms are written on every warm; counts only where missing
-- (SETNX / HSETNX), so a re-warm, or a warm racing a decision, never resets a count.
-- KEYS: 1 meta, then the other keys of the pool that the sections write
-- ARGV: sections of 5 + C values each: key index, when ('always' | 'cold'),
--   how ('hset' | 'hsetnx' | 'setnx'), ttl seconds (0 = none), C, then C values
--   (field/value pairs for hashes, one value for setnx)
-- Returns cold | warm (as it was before this call)
local cold = is_cold(1)
local i = 1
while i <= #ARGV do
  local k, when, how = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]
  local ttl, c = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  if when == 'always' or cold then
    if how == 'setnx' then
      redis.call('SETNX', KEYS[k], ARGV[i + 5])
    elseif how == 'hset' then
      for j = i + 5, i + 4 + c, 2 do redis.call('HSET', KEYS[k], ARGV[j], ARGV[j + 1]) end
    else
      for j = i + 5, i + 4 + c, 2 do redis.call('HSETNX', KEYS[k], ARGV[j], ARGV[j + 1]) end
    end
    if ttl > 0 and c > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
  end
  i = i + 5 + c
end
if cold then return reply('cold') end
return reply('warm')
