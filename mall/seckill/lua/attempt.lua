-- One seckill attempt, decided atomically. All keys share the item's hash tag {sk:ID}.
-- KEYS: 1 meta, 2 stock, 3 buyers, 4 idem, 5 rl:<member>, 6 wins (stream), 7 res
-- ARGV: 1 member, 2 idempotency field ('' = none), 3 now (ms, from kit.clock),
--       4 reservation id (fresh per call), 5 attempts per window, 6 window (ms)
-- Returns {answer, detail}: won+reservation id | sold_out | limit_reached | not_started |
--   ended | rate_limited+retry ms | not_warm (the caller warms the item and retries)
local member, idem, rid = ARGV[1], ARGV[2], ARGV[4]

-- a client retry with the same Idempotency-Key gets the same win
if idem ~= '' then
  local prior = redis.call('HGET', KEYS[4], idem)
  if prior then return {'won', prior} end
end
-- a redis-py retry of this very call (reply lost on the wire) must not win twice
if redis.call('HEXISTS', KEYS[7], rid) == 1 then return {'won', rid} end

local meta = redis.call('HMGET', KEYS[1], 'start', 'end', 'limit', 'closed', 'item', 'points', 'cash')
if not meta[1] then return {'not_warm', ''} end
local now = tonumber(ARGV[3])
if meta[4] == '1' then return {'ended', ''} end
if now < tonumber(meta[1]) then return {'not_started', ''} end
if now >= tonumber(meta[2]) then return {'ended', ''} end
if tonumber(redis.call('GET', KEYS[2]) or '0') <= 0 then return {'sold_out', ''} end

local hits = redis.call('INCR', KEYS[5])
if hits == 1 then redis.call('PEXPIRE', KEYS[5], ARGV[6]) end
if hits > tonumber(ARGV[5]) then
  return {'rate_limited', tostring(redis.call('PTTL', KEYS[5]))}
end

if tonumber(redis.call('HGET', KEYS[3], member) or '0') >= tonumber(meta[3]) then
  return {'limit_reached', ''}
end

redis.call('DECR', KEYS[2])
redis.call('HINCRBY', KEYS[3], member, 1)
redis.call('XADD', KEYS[6], '*', 'rid', rid, 'member', member, 'item', meta[5],
  'points', meta[6], 'cash', meta[7], 'ts', ARGV[3])
redis.call('HSET', KEYS[7], rid, member)
if idem ~= '' then
  redis.call('HSET', KEYS[4], idem, rid)
  if redis.call('PTTL', KEYS[4]) < 0 then
    redis.call('PEXPIREAT', KEYS[4], tonumber(meta[2]) + 86400000)
  end
end
return {'won', rid}
