-- Reserve one password check for a staff login name (existing or not), in one step, so
-- parallel wrong passwords cannot get more checks than the limit before the lock.
-- KEYS[1] failures counter, KEYS[2] lock (value: locked until, ms on the app's clock)
-- ARGV[1] now ms, ARGV[2] max failures, ARGV[3] lockout ms
-- {0, n}: check the password; a wrong one is failure n.
-- {1, ms}: locked for ms more; no check.
local now = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local lockout = tonumber(ARGV[3])
local locked_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if locked_until > now then return {1, locked_until - now} end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], lockout) end
if n > max then
  -- every check that may fail is handed out and more are asked for: lock now
  redis.call('SET', KEYS[2], now + lockout, 'PX', lockout)
  redis.call('DEL', KEYS[1])
  return {1, lockout}
end
return {0, n}
