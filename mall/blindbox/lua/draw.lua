-- One blind-box draw, decided atomically; the helpers of mall.kit.stock come first.
-- All keys share the hash tag {bb:ID}.
local META, STOCK, PITY, DAY, INFLIGHT, SEQ = 1, 2, 3, 4, 5, 6
-- KEYS: meta (hash; conf = JSON of prizes, cap, guarantee), stock (hash prize -> units
--       left, limited prizes only), pity (hash member -> draws since the last
--       guaranteed-tier prize), day (hash member -> draws this business day), inflight
--       (hash member -> record of a draw decided but not yet recorded), seq (draw counter)
-- ARGV: 1 member, 2 r (integer, 0 <= r < 2^53, from `secrets` in the app), 3 draw id,
--       4 day key ttl seconds, 5 now (epoch seconds), 6 business day label
-- Replies: cold | sold_out | cap|draws today|cap | busy (a draw of this member in flight) |
--   ok|prize|tier|pity before|pity after|forced (0/1)|seq|draws today|total weight|
--     the table used as id:tier:weight,...
-- The choice must stay identical to mall.blindbox.draw.pick (re-derivation).
local raw = redis.call('HGET', KEYS[META], 'conf')
if not raw then return reply('cold') end
local conf = cjson.decode(raw)
local member = ARGV[1]
local prizes = conf.prizes -- {{id, weight, tier, limited}, ...} in ascending id order

local limited = {}
for _, p in ipairs(prizes) do
  if p[4] == 1 then limited[#limited + 1] = p[1] end
end
local stocks = {}
if #limited > 0 then
  local vals = redis.call('HMGET', KEYS[STOCK], unpack(limited))
  for i, id in ipairs(limited) do stocks[id] = tonumber(vals[i]) or 0 end
end

-- effective weight = weight x (stock > 0): sold-out prizes drop out, the rest re-normalize
local eff = {}
local total = 0
for i, p in ipairs(prizes) do
  local w = p[2]
  if p[4] == 1 and stocks[p[1]] <= 0 then w = 0 end
  eff[i] = w
  total = total + w
end
if total <= 0 then return reply('sold_out') end

local used = tonumber(redis.call('HGET', KEYS[DAY], member) or '0')
if conf.cap > 0 and used >= conf.cap then return reply('cap', used, conf.cap) end
if redis.call('HEXISTS', KEYS[INFLIGHT], member) == 1 then return reply('busy') end

local every = conf.gevery
local gtier = conf.gtier
local pity = tonumber(redis.call('HGET', KEYS[PITY], member) or '0')
local forced = 0
local pick_total = total
if every > 0 and pity >= every - 1 then
  local t = 0
  for i, p in ipairs(prizes) do
    if p[3] == gtier then t = t + eff[i] end
  end
  -- a sold-out guaranteed tier cannot be forced: draw normally, the counter keeps counting
  if t > 0 then
    forced = 1
    pick_total = t
  end
end

-- fmod is exact on integers below 2^53 (Lua's % is not)
local x = math.fmod(tonumber(ARGV[2]), pick_total)
local chosen = nil
local acc = 0
for i, p in ipairs(prizes) do
  if forced == 0 or p[3] == gtier then
    acc = acc + eff[i]
    if x < acc then
      chosen = i
      break
    end
  end
end
local prize = prizes[chosen]

if prize[4] == 1 then take_units(STOCK, prize[1], 1) end
local after = 0
if every > 0 then
  if prize[3] ~= gtier then after = pity + 1 end
  redis.call('HSET', KEYS[PITY], member, after)
end
local today = count_up(DAY, member, 1)
if today == 1 then redis.call('EXPIRE', KEYS[DAY], ARGV[4]) end
local seq = redis.call('INCR', KEYS[SEQ])
redis.call('HSET', KEYS[INFLIGHT], member,
  ARGV[3] .. '|' .. prize[1] .. '|' .. pity .. '|' .. ARGV[6] .. '|' .. ARGV[5] .. '|' .. seq)

local tbl = {}
for i, p in ipairs(prizes) do tbl[i] = p[1] .. ':' .. p[3] .. ':' .. eff[i] end
return reply('ok', prize[1], prize[3], pity, after, forced, seq, today, total, table.concat(tbl, ','))
