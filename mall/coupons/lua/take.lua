-- Decide one issue of a coupon template: total quantity, and for shopper claims the
-- claim window and the per-member limit. Nothing is written unless it is a win.
-- KEYS[1] = {cpn:<id>}:meta     hash total(-1 = unlimited) per_member active claimable starts ends
-- KEYS[2] = {cpn:<id>}:issued   count issued so far (claims and packs)
-- KEYS[3] = {cpn:<id>}:members  hash member id -> count held
-- ARGV[1] = member id, ARGV[2] = now (unix seconds), ARGV[3] = how many,
-- ARGV[4] = '1' for a shopper claim (window, claimable and per-member limit apply)
-- returns {status, number}: ok/issued total, cold, inactive, not_claimable, not_started,
-- ended, sold_out/issued, limit_reached/held
local m = redis.call('HMGET', KEYS[1], 'total', 'per_member', 'active', 'claimable', 'starts', 'ends')
if not m[1] then return {'cold', 0} end
if m[3] ~= '1' then return {'inactive', 0} end
local n = tonumber(ARGV[3])
local claim = ARGV[4] == '1'
if claim then
  if m[4] ~= '1' then return {'not_claimable', 0} end
  local now = tonumber(ARGV[2])
  if m[5] and m[5] ~= '' and now < tonumber(m[5]) then return {'not_started', 0} end
  if m[6] and m[6] ~= '' and now >= tonumber(m[6]) then return {'ended', 0} end
end
local issued = tonumber(redis.call('GET', KEYS[2]) or '0')
local total = tonumber(m[1])
if total >= 0 and issued + n > total then return {'sold_out', issued} end
if claim then
  local held = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
  if held + n > tonumber(m[2]) then return {'limit_reached', held} end
end
redis.call('HINCRBY', KEYS[3], ARGV[1], n)
return {'ok', redis.call('INCRBY', KEYS[2], n)}
