-- Read a pool's keys at one instant, for the reconciler.
-- KEYS: the keys to read. ARGV: how to read each, in order:
--   'get' | 'hgetall' | 'xrange' (a stream's entries) | 'scard' | 'zcard'
-- Returns ok|<JSON array, one entry per key; false for a missing string>
local out = {}
for k = 1, #KEYS do
  local how = ARGV[k]
  if how == 'get' then
    out[k] = redis.call('GET', KEYS[k])
  elseif how == 'hgetall' then
    out[k] = redis.call('HGETALL', KEYS[k])
  elseif how == 'xrange' then
    out[k] = redis.call('XRANGE', KEYS[k], '-', '+')
  elseif how == 'scard' then
    out[k] = redis.call('SCARD', KEYS[k])
  else
    out[k] = redis.call('ZCARD', KEYS[k])
  end
end
return reply('ok', cjson.encode(out))
