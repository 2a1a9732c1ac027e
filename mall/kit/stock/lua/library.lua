-- mall.kit.stock: helpers shared by every stock script, prepended to each one.
-- Keys are passed to the helpers as indices into KEYS, so a script still reaches only
-- the keys it is given (one hash tag, one cluster slot).
--
-- One reply format: a single string, 'status' or 'status|value|value...'. Only the last
-- value may contain '|'; lists inside a value use ',' and ':'. The statuses are named in
-- mall.kit.stock (OK, COLD, DUP, SHORT, ...). Numbers above 1e14 are passed as strings
-- (Lua would print them rounded).

local function reply(status, ...)
  if select('#', ...) == 0 then return status end
  return status .. '|' .. table.concat({...}, '|')
end

-- A pool is warm while its meta hash exists; a cold one is loaded from the database.
local function is_cold(meta)
  return redis.call('EXISTS', KEYS[meta]) == 0
end

-- Units left in a pool: the stock key itself, or one field of it when the pool holds
-- several kinds of unit (unit ~= ''). nil when not loaded.
local function units_left(stock, unit)
  if unit == '' then return tonumber(redis.call('GET', KEYS[stock])) end
  return tonumber(redis.call('HGET', KEYS[stock], unit))
end

local function take_units(stock, unit, n)
  if unit == '' then return redis.call('DECRBY', KEYS[stock], n) end
  return redis.call('HINCRBY', KEYS[stock], unit, -n)
end

-- Units back into a loaded pool (a kind of unit it does not count is left alone);
-- returns the units left.
local function put_units(stock, unit, n)
  local left = units_left(stock, unit)
  if left == nil then return left end
  if unit == '' then return redis.call('INCRBY', KEYS[stock], n) end
  return redis.call('HINCRBY', KEYS[stock], unit, n)
end

-- Per-member counters (units bought, draws today, ...): a hash member -> count.
local function count_up(counter, member, n)
  return redis.call('HINCRBY', KEYS[counter], member, n)
end

local function count_down(counter, member, n)
  local left = redis.call('HINCRBY', KEYS[counter], member, -n)
  if left <= 0 then redis.call('HDEL', KEYS[counter], member) end
  return left
end

-- True the first time a set sees `id`: what makes a give-back happen once per reservation.
local function first_time(seen, id)
  return redis.call('SADD', KEYS[seen], id) == 1
end
