-- The ticks spent against each of a policy's spend budgets, in the periods of `now_ms`.
local function spent_now(p, now_ms)
  local spent = {}
  if #p.spend > 0 then
    local day, month = periods(now_ms)
    for j, b in ipairs(p.spend) do
      local name = b.key .. ':' .. (b.period == 'day' and day or month)
      local value  -- a key's counter, or the `$` field of its tenant's sums
      if b.field then
        value = redis.call('HGET', name, b.field)
      else
        value = redis.call('GET', name)
      end
      spent[j] = tonumber(value or '0')
    end
  end
  return spent
end
-- Where a policy `p` stands at `now_ms`: the units counted in each request and each token
-- window, the ticks spent against each spend budget, and the live concurrency leases (the
-- expired ones removed first when `purge`).
local function standing(p, now_ms, purge)
  local function used(windows)
    if #windows == 0 then return {} end
    local names = {}
    for i, w in ipairs(windows) do names[i] = (window_at(w.key, w.seconds, now_ms)) end
    local counts = redis.call('MGET', unpack(names))
    for i = 1, #windows do counts[i] = tonumber(counts[i] or '0') end
    return counts
  end
  local spent = spent_now(p, now_ms)
  local live = 0
  if p.concurrency then
    local leases = p.concurrency.key
    if purge then
      redis.call('ZREMRANGEBYSCORE', leases, '-inf', now_ms)
      live = redis.call('ZCARD', leases)
    else
      live = redis.call('ZCOUNT', leases, '(' .. now_ms, '+inf')
    end
  end
  return used(p.requests), used(p.tokens), spent, live
end
-- Spend held by requests in flight: each admission that reserved an estimate has an entry
-- in `p.holds.amounts` ('<ticks>|<key id>'), a due time in `p.holds.due` (renewed with the
-- leases, so a dead replica's holds free themselves), and is summed in `p.holds.held` under
-- 'k:<key id>' and, with a tenant, 't'.
local function drop_hold(p, id)
  local h = p.holds
  local entry = redis.call('HGET', h.amounts, id)
  if not entry then return end
  local sep = string.find(entry, '|', 1, true)
  local amount, key_id = string.sub(entry, 1, sep - 1), string.sub(entry, sep + 1)
  redis.call('HINCRBY', h.held, 'k:' .. key_id, '-' .. amount)
  if h.tenant then redis.call('HINCRBY', h.held, 't', '-' .. amount) end
  redis.call('HDEL', h.amounts, id)
  redis.call('ZREM', h.due, id)
end
-- The spend held now for the key and for its tenant, after dropping holds past their due.
local function held_now(p, now_ms)
  local h = p.holds
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', h.due, '-inf', now_ms, 'LIMIT', 0, 64)) do
    drop_hold(p, id)
  end
  local key = tonumber(redis.call('HGET', h.held, 'k:' .. p.key_id) or '0')
  local tenant = h.tenant and tonumber(redis.call('HGET', h.held, 't') or '0') or 0
  return key, tenant
end
-- Hold `amount` ticks for admission `id` of the key until `due_ms`.
local function hold(p, id, amount, due_ms)
  local h = p.holds
  redis.call('HSET', h.amounts, id, string.format('%d|%s', amount, p.key_id))
  redis.call('ZADD', h.due, due_ms, id)
  redis.call('HINCRBY', h.held, 'k:' .. p.key_id, string.format('%d', amount))
  if h.tenant then redis.call('HINCRBY', h.held, 't', string.format('%d', amount)) end
  for _, name in ipairs({h.amounts, h.due, h.held}) do
    redis.call('PEXPIRE', name, 86400000)  -- a day after the last hold: all are due by then
  end
end
