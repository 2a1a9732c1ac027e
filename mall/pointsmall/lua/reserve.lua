-- Decide one redemption, atomically, on the item's keys only (one hash tag, one cluster
-- slot; the member's own keys live elsewhere): the shelf window, per-member limits
-- (total, per period) and stock; then take the units, append the redemption to the
-- item's stream (the consumer spends the points and writes it) and record the
-- Idempotency-Key's answer. The helpers of mall.kit.stock come first.
local META, STOCK, BUYERS, RES, PERIOD, WINS, IDEM = 1, 2, 3, 4, 5, 6, 7
-- KEYS: meta (terms: status, start, end ms, price, limit, plimit, cash), stock, buyers
--   (member -> units), res (pending reservation -> "member|qty|points|ts|period key"),
--   period counter (member -> units), wins (the stream), idem (this request's key)
-- ARGV: 1 member, 2 qty, 3 reservation id (fresh), 4 now ms, 5 period key ttl seconds,
--   6 '1' when the item counts units per period, 7 period label, 8 address JSON ('' none),
--   9 '1' when the request has an Idempotency-Key, 10 its ttl seconds, 11 the request's
--   fingerprint (a retry with other terms is refused by the caller)
-- Replies: ok|reservation|units left|points | again|reservation|qty|points|fingerprint |
--   cold | gone (draft/archived) | off_shelf | limit|held|limit | period_limit|held|limit |
--   sold_out|units left
if ARGV[9] == '1' then
  local prior = redis.call('GET', KEYS[IDEM])
  if prior then return reply('again', prior) end
end
local m = redis.call('HMGET', KEYS[META], 'status', 'start', 'end', 'price', 'limit', 'plimit',
  'cash')
if not m[1] then return reply('cold') end
if m[1] == 'draft' or m[1] == 'archived' then return reply('gone') end
local now = tonumber(ARGV[4])
if m[1] ~= 'on' then return reply('off_shelf') end
if m[2] ~= '' and now < tonumber(m[2]) then return reply('off_shelf') end
if m[3] ~= '' and now >= tonumber(m[3]) then return reply('off_shelf') end
local member, rid = ARGV[1], ARGV[3]
local qty = tonumber(ARGV[2])
local limit_total, limit_period = tonumber(m[5]), tonumber(m[6])
if limit_total > 0 then
  local held = tonumber(redis.call('HGET', KEYS[BUYERS], member) or '0')
  if held + qty > limit_total then return reply('limit', held, limit_total) end
end
local counts_period = ARGV[6] == '1' and limit_period > 0
if counts_period then
  local held = tonumber(redis.call('HGET', KEYS[PERIOD], member) or '0')
  if held + qty > limit_period then return reply('period_limit', held, limit_period) end
end
local left = units_left(STOCK, '') or 0
if left < qty then return reply('sold_out', left) end
take_units(STOCK, '', qty)
count_up(BUYERS, member, qty)
local pkey = ''
if ARGV[6] == '1' then
  count_up(PERIOD, member, qty)
  redis.call('EXPIRE', KEYS[PERIOD], ARGV[5])
  pkey = KEYS[PERIOD]
end
local points = tonumber(m[4]) * qty
-- points + cash: the cash part travels with the entry (the consumer holds the points)
local cash = tonumber(m[7] or '0') * qty
redis.call('XADD', KEYS[WINS], '*', 'rid', rid, 'member', member, 'qty', qty,
  'points', points, 'cash', cash, 'label', ARGV[7], 'ts', ARGV[4], 'address', ARGV[8])
redis.call('HSET', KEYS[RES], rid, member .. '|' .. qty .. '|' .. points .. '|' .. ARGV[4] .. '|' .. pkey)
if ARGV[9] == '1' then
  redis.call('SET', KEYS[IDEM], rid .. '|' .. qty .. '|' .. points .. '|' .. ARGV[11], 'EX', ARGV[10])
end
return reply('ok', rid, left - qty, points)
