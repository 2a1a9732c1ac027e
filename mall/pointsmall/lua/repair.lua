-- Set Redis stock to the database's figure, only if nothing changed since the
-- reconciler looked (same version) and no reservation is pending.
-- KEYS: 1 stock, 2 resv, 3 ver. ARGV: 1 expected ver, 2 stock.
if tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[1]) then return 0 end
if redis.call('ZCARD', KEYS[2]) > 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('INCR', KEYS[3])
return 1
