-- Give a pending reservation back (the database write failed or never happened):
-- its units return to stock and to the member's limits. Idempotent.
-- KEYS: 1 stock, 2 buyers, 3 resv, 4 resvinfo, 5 ver, 6 period counter
-- ARGV: 1 reservation id. Returns 1 if given back, 0 if it was not pending.
if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then
  redis.call('HDEL', KEYS[4], ARGV[1])
  return 0
end
local info = redis.call('HGET', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('INCR', KEYS[5])
if not info then return 0 end
local member, qty, pkey = string.match(info, '^([^|]*)|([^|]*)|(.*)$')
qty = tonumber(qty)
redis.call('INCRBY', KEYS[1], qty)
if redis.call('HINCRBY', KEYS[2], member, -qty) <= 0 then redis.call('HDEL', KEYS[2], member) end
if pkey ~= '' and pkey == KEYS[6] and redis.call('EXISTS', KEYS[6]) == 1 then
  if redis.call('HINCRBY', KEYS[6], member, -qty) <= 0 then redis.call('HDEL', KEYS[6], member) end
end
return 1
