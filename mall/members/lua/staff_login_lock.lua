-- The last allowed check failed: lock the name. KEYS as in staff_login_reserve.lua;
-- ARGV[1] now ms, ARGV[2] lockout ms.
local now = tonumber(ARGV[1])
local lockout = tonumber(ARGV[2])
redis.call('SET', KEYS[2], now + lockout, 'PX', lockout)
redis.call('DEL', KEYS[1])
return 1
