-- Load a template into Redis from the database (the record of truth).
-- KEYS as in take.lua. ARGV[1..6] = total per_member active claimable starts ends,
-- ARGV[7] = issued count in the DB, then member/count pairs.
-- Counts are seeded only when the template is cold; the terms are always refreshed.
local cold = redis.call('EXISTS', KEYS[1]) == 0
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'per_member', ARGV[2], 'active', ARGV[3],
  'claimable', ARGV[4], 'starts', ARGV[5], 'ends', ARGV[6])
if cold then
  redis.call('SET', KEYS[2], ARGV[7])
  redis.call('DEL', KEYS[3])
  for i = 8, #ARGV, 2 do
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  end
end
return cold and 1 or 0
