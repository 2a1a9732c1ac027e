-- One touch for one member in one month, if the cap allows.
-- KEYS[1] = touch:{m:<member>}:<yyyymm>
-- ARGV[1] = cap, ARGV[2] = ttl seconds, ARGV[3] = count from the DB log ('' = unknown)
-- returns 1 taken, 0 cap reached, -1 counter missing (call again with ARGV[3])
local n = redis.call('GET', KEYS[1])
if not n then
  if ARGV[3] == '' then return -1 end
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[2], 'NX')
  n = redis.call('GET', KEYS[1])
end
if tonumber(n) >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
return 1
