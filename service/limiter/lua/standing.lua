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
