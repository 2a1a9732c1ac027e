-- One flash-sale attempt, decided atomically; the helpers of mall.kit.stock come first.
-- All keys share the item's hash tag {sk:ID}.
local META, STOCK, BUYERS, IDEM, WINS, RES, BOOKED, FLAGGED, RL = 1, 2, 3, 4, 5, 6, 7, 8, 9
-- ARGV: 1 member, 2 idempotency field ('' = none), 3 now (ms, from kit.clock),
--       4 reservation id (fresh per call), 5 attempts per window, 6 window (ms),
--       the member's token claims: 7 level, 8 phone bound (1/0), 9 joined (ms)
--       ('' each when the token carries none)
-- Replies: won|reservation id | sold_out | limit_reached | not_started | ended |
--   rate_limited|retry ms | cold (the caller warms the item and retries) |
--   ineligible|phone, joined, level, flagged or booking | stale (rules need claims the
--   token lacks: the caller asks the client to refresh it)
local member, idem, rid = ARGV[1], ARGV[2], ARGV[4]

-- a client retry with the same Idempotency-Key gets the same win
if idem ~= '' then
  local prior = redis.call('HGET', KEYS[IDEM], idem)
  if prior then return reply('won', prior) end
end
-- a redis-py retry of this very call (reply lost on the wire) must not win twice
if redis.call('HEXISTS', KEYS[RES], rid) == 1 then return reply('won', rid) end

local meta = redis.call('HMGET', KEYS[META], 'start', 'end', 'limit', 'closed', 'item',
  'points', 'cash', 'rule_phone', 'rule_joined', 'rule_level', 'rule_flagged', 'rule_booking')
if not meta[1] then return reply('cold') end
local now = tonumber(ARGV[3])
if meta[4] == '1' then return reply('ended') end
if now < tonumber(meta[1]) then return reply('not_started') end
if now >= tonumber(meta[2]) then return reply('ended') end

-- fair-sale rules: the sale's (meta, set by ops) against the token's claims, the flagged
-- and booked sets kept under the item's tag (no database read, no extra round trip)
local need_phone, joined_before = meta[8] == '1', tonumber(meta[9] or '0')
local min_level = tonumber(meta[10] or '0')
if need_phone or joined_before > 0 or min_level > 0 then
  if ARGV[7] == '' then return reply('stale') end
  if need_phone and ARGV[8] ~= '1' then return reply('ineligible', 'phone') end
  if joined_before > 0 and tonumber(ARGV[9]) >= joined_before then
    return reply('ineligible', 'joined', meta[9])
  end
  if tonumber(ARGV[7]) < min_level then return reply('ineligible', 'level', meta[10]) end
end
if meta[11] == '1' and redis.call('SISMEMBER', KEYS[FLAGGED], member) == 1 then
  return reply('ineligible', 'flagged')
end
if meta[12] == '1' and redis.call('SISMEMBER', KEYS[BOOKED], member) == 0 then
  return reply('ineligible', 'booking')
end
if (units_left(STOCK, '') or 0) <= 0 then return reply('sold_out') end

local hits = redis.call('INCR', KEYS[RL])
if hits == 1 then redis.call('PEXPIRE', KEYS[RL], ARGV[6]) end
if hits > tonumber(ARGV[5]) then
  return reply('rate_limited', redis.call('PTTL', KEYS[RL]))
end

if tonumber(redis.call('HGET', KEYS[BUYERS], member) or '0') >= tonumber(meta[3]) then
  return reply('limit_reached')
end

take_units(STOCK, '', 1)
count_up(BUYERS, member, 1)
redis.call('XADD', KEYS[WINS], '*', 'rid', rid, 'member', member, 'item', meta[5],
  'points', meta[6], 'cash', meta[7], 'ts', ARGV[3])
redis.call('HSET', KEYS[RES], rid, member)
if idem ~= '' then
  redis.call('HSET', KEYS[IDEM], idem, rid)
  if redis.call('PTTL', KEYS[IDEM]) < 0 then
    redis.call('PEXPIREAT', KEYS[IDEM], tonumber(meta[2]) + 86400000)
  end
end
return reply('won', rid)
