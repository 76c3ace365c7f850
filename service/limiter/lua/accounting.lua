-- What a release charges: counters, rate windows, and the ledger row, sums and spend of one
-- day. Amounts are whole numbers below 2^53 (the client clamps each one), written with %d so
-- Redis never sees Lua's exponent notation. Expiries are set when a counter is created.
local function int(n) return string.format('%d', n) end
local function add(name, amount, expires_at)
  if redis.call('INCRBY', name, int(amount)) == amount then
    redis.call('PEXPIREAT', name, expires_at)
  end
end
-- Add to the counter of a rate window (it outlives its window by a second).
local function add_window(base, seconds, at, amount)
  local name, ends = window_at(base, seconds, at)
  add(name, amount, ends + 1000)
end
-- Add `measures` (code -> amount; `r`, requests, always 1 or more) to hash `name` under
-- `suffix` ('' for sums, '|<model>' in a ledger row).
local function add_measures(name, suffix, measures, expires_at)
  if redis.call('HINCRBY', name, 'r' .. suffix, int(measures.r)) == measures.r then
    redis.call('PEXPIREAT', name, expires_at)
  end
  for code, amount in pairs(measures) do
    if code ~= 'r' and amount ~= 0 then
      redis.call('HINCRBY', name, code .. suffix, int(amount))
    end
  end
end
-- Sum `measures` into `into` (both code -> amount).
local function sum_into(into, measures)
  for code, amount in pairs(measures) do into[code] = (into[code] or 0) + amount end
end
-- The tenant's day keeps at most `p.models_per_day` model names in its ledger rows; the
-- charges of any other name are summed under `p.other_model`, so a tenant cannot grow its
-- rows (or the reports) without bound by naming models.
local function bounded(p, day, day_end, by_model)
  local known = p.models .. ':' .. day
  local kept, other = {}, nil
  for model, measures in pairs(by_model) do
    local own = model == p.no_model or model == p.other_model
      or redis.call('SISMEMBER', known, model) == 1
    if not own and redis.call('SCARD', known) < p.models_per_day then
      if redis.call('SADD', known, model) == 1 and redis.call('SCARD', known) == 1 then
        redis.call('PEXPIREAT', known, day_end + 86400000)
      end
      own = true
    end
    if own then
      kept[model] = measures
    else
      other = other or {}
      sum_into(other, measures)
    end
  end
  if other then
    kept[p.other_model] = kept[p.other_model] or {}
    sum_into(kept[p.other_model], other)
  end
  return kept
end
-- One day's charges of a policy `p`: `by_model` maps a model to its measures, `total` is
-- their sum; `at` is an instant of that day.
local function account(p, at, by_model, total)
  local day, month, day_end, month_end = periods(at)
  local row = p.ledger .. ':' .. day .. ':' .. p.key_id
  for model, measures in pairs(bounded(p, day, day_end, by_model)) do
    add_measures(row, '|' .. model, measures, day_end + p.retention_ms)
  end
  for _, base in ipairs(p.sums) do
    add_measures(base .. ':' .. day, '', total, day_end + 86400000)
    add_measures(base .. ':' .. month, '', total, month_end + 86400000)
  end
  local cost = total['$'] or 0
  if cost ~= 0 then
    add(p.key_spend .. ':' .. day, cost, day_end + 86400000)
    add(p.key_spend .. ':' .. month, cost, month_end + 86400000)
  end
end
