-- Load an item into Redis. Never resets the stock or buyers of an item already warm,
-- so a re-warm (or a warm after a restart with AOF) cannot oversell.
-- KEYS: 1 meta, 2 stock, 3 buyers
-- ARGV: 1 item id, 2 start ms, 3 end ms, 4 per-member limit, 5 closed (0|1),
--       6 points price, 7 cash price fen, 8 initial stock, 9 stock left per the database,
--       10.. member, count pairs of units held per the database (used only on a cold warm)
local cold = redis.call('EXISTS', KEYS[2]) == 0
redis.call('HSET', KEYS[1], 'item', ARGV[1], 'start', ARGV[2], 'end', ARGV[3],
  'limit', ARGV[4], 'closed', ARGV[5], 'points', ARGV[6], 'cash', ARGV[7])
if cold then
  redis.call('HSET', KEYS[1], 'initial', ARGV[8])
  redis.call('SET', KEYS[2], ARGV[9])
  redis.call('DEL', KEYS[3])
  for i = 10, #ARGV, 2 do
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  end
  return 1
end
return 0
