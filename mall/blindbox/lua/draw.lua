-- One blind-box draw, decided atomically and appended to the series' stream; the
-- helpers of mall.kit.stock come first. All keys share the hash tag {bb:ID}: the
-- member's own keys (another slot on a cluster) are never touched.
local META, STOCK, PITY, LAST, DAY, SEQ, DRAWS, RES, IDEM, IDEM_BEFORE = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
-- KEYS: meta (hash; conf = JSON of prizes, cost, window, age rule, cap, guarantee),
--       stock (hash prize -> units left, limited prizes only), pity (hash member ->
--       draws since the last guaranteed-tier prize), last (hash member -> seq of their
--       latest draw), day (hash member -> draws this business day), seq (draw counter),
--       draws (stream of decided draws, read by the consumer), res (hash reservation ->
--       answer, until persisted), idem (hash member:Idempotency-Key -> answer, for
--       this business day; kept two days), idem of the day before
-- ARGV: 1 member, 2 r (integer, 0 <= r < 2^53, from `secrets` in the app), 3 reservation
--       id (fresh per call), 4 day key ttl seconds, 5 now (ms, from kit.clock),
--       6 business day label, 7 idempotency field ('' = none), 8 the member's age in
--       years today (-1: no birthday on file)
-- Replies: cold | closed (not on sale now) | birthday | age|min age | minor | sold_out |
--   cap|draws today|cap |
--   ok|reservation|prize|tier|pity before|pity after|forced (0/1)|seq|draws today|cost|
--     member[|total weight|the table used as id:tier:weight,...]
--   (the table only on a fresh draw; a replay answers the stored part)
-- The choice must stay identical to mall.blindbox.draw.pick (re-derivation).
local member, rid, idem = ARGV[1], ARGV[3], ARGV[7]

-- a client retry with the same Idempotency-Key gets the same draw
if idem ~= '' then
  local prior = redis.call('HGET', KEYS[IDEM], idem) or redis.call('HGET', KEYS[IDEM_BEFORE], idem)
  if prior then return prior end
end
-- a redis-py retry of this very call (reply lost on the wire) must not draw twice
local again = redis.call('HGET', KEYS[RES], rid)
if again then return again end

local raw = redis.call('HGET', KEYS[META], 'conf')
if not raw then return reply('cold') end
local conf = cjson.decode(raw)
-- terms published by an older release lack the request's checks: warm them again
if conf.cost == nil then return reply('cold') end
local now = tonumber(ARGV[5])
if conf.open ~= 1 or (conf.start > 0 and now < conf.start) or (conf['end'] > 0 and now >= conf['end']) then
  return reply('closed')
end
local age = tonumber(ARGV[8])
if age < 0 then return reply('birthday') end
if age < conf.min_age then return reply('age', conf.min_age) end
if age < 18 and conf.minors ~= 1 then return reply('minor') end

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
local seq = redis.call('INCR', KEYS[SEQ])
local after = 0
if every > 0 then
  if prize[3] ~= gtier then after = pity + 1 end
  redis.call('HSET', KEYS[PITY], member, after)
  redis.call('HSET', KEYS[LAST], member, seq)
end
local today = count_up(DAY, member, 1)
if today == 1 then redis.call('EXPIRE', KEYS[DAY], ARGV[4]) end

local tbl = {}
for i, p in ipairs(prizes) do tbl[i] = p[1] .. ':' .. p[3] .. ':' .. eff[i] end
local shown = table.concat(tbl, ',')
local mode = 'normal'
if forced == 1 then mode = 'guarantee' end
redis.call('XADD', KEYS[DRAWS], '*', 'rid', rid, 'member', member, 'prize', prize[1],
  'tier', prize[3], 'pb', pity, 'pa', after, 'forced', forced, 'seq', seq, 'day', ARGV[6],
  'r', ARGV[2], 'cost', conf.cost, 'ts', ARGV[5], 'mode', mode, 'gtier', gtier,
  'table', shown)
local answer = reply('ok', rid, prize[1], prize[3], pity, after, forced, seq, today, conf.cost, member)
redis.call('HSET', KEYS[RES], rid, answer)
if idem ~= '' then
  if redis.call('HSET', KEYS[IDEM], idem, answer) == 1 and redis.call('TTL', KEYS[IDEM]) < 0 then
    redis.call('EXPIRE', KEYS[IDEM], ARGV[4])
  end
end
return answer .. '|' .. total .. '|' .. shown
