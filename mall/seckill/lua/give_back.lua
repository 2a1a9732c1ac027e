-- Hand one unit back to stock for a released/expired reservation, once per reservation.
-- KEYS: 1 meta, 2 stock, 3 buyers, 4 returned (set of reservation ids)
-- ARGV: 1 reservation id, 2 member
-- Returns 1 given back, 0 already given back, -1 item not warm (a cold warm recounts)
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if redis.call('SADD', KEYS[4], ARGV[1]) == 0 then return 0 end
redis.call('INCR', KEYS[2])
if redis.call('HINCRBY', KEYS[3], ARGV[2], -1) <= 0 then redis.call('HDEL', KEYS[3], ARGV[2]) end
return 1
