-- Admit up to n requests of one policy at once, as n calls in a row would decide them: the
-- first `admitted` take a unit of every request window, a lease each and a marker each.
-- Only this count must be atomic; why the others were refused is worked out by the client
-- (`decide.py`, whose `admissible` this mirrors) from what the script returns.
-- A marker, 'a:<now_ms>', lets cancel.lua take an admission back if its reply was lost.
-- With spend budgets, an admission also holds its estimated cost (`hold`, ticks) against them
-- until its release: one that would take the spent and held amounts past a budget is refused,
-- unless nothing is held (so one request can always start while a budget is not spent).
-- ARGV: deadline_ms, the policy (a record), the batch: {"admissions": [{"id", "hold"}],
--       "owned": [ownership keys of the stored objects the tenant must own] (such an
--       admission comes alone)}
-- Returns: now_ms, admitted (-1: past the deadline, nothing done; -2: not the owner, then the
--          index of the first object it does not own), live leases, {units per request
--          window}, {units per token window}, {ticks per budget}, {ticks held for the key,
--          for its tenant}, all as before these admissions; with `owned`, then the upstream
--          recorded with the first object (the one that must answer for it)
if late then return {now_ms, -1} end
local p, batch = cjson.decode(ARGV[2]), cjson.decode(ARGV[3])
local pinned = false
for j, key in ipairs(batch.owned or {}) do
  local upstream = redis.call('GET', key)
  if not upstream then return {now_ms, -2, j} end
  if j == 1 then pinned = upstream end
end
local requests, tokens, spent, live = standing(p, now_ms, true)
local held_key, held_tenant = 0, 0
if p.holds then held_key, held_tenant = held_now(p, now_ms) end
local admissions = batch.admissions
local admitted = #admissions
for i, w in ipairs(p.requests) do
  admitted = math.min(admitted, math.max(0, w.limit - requests[i]))
end
for i, w in ipairs(p.tokens) do
  if tokens[i] >= w.limit then admitted = 0 end
end
for j, b in ipairs(p.spend) do
  if spent[j] >= b.ticks then admitted = 0 end
end
if p.concurrency then admitted = math.min(admitted, math.max(0, p.concurrency.cap - live)) end
if p.holds then  -- in order, each with the holds of those before it (decide.py's rule)
  local before = 0
  for j = 1, admitted do
    local amount = admissions[j].hold or 0
    for b_i, b in ipairs(p.spend) do
      local held = (b.field and held_tenant or held_key) + before
      if held > 0 and spent[b_i] + held + amount > b.ticks then
        admitted = j - 1
        break
      end
    end
    if admitted < j then break end
    before = before + amount
  end
end
if admitted > 0 then
  for _, w in ipairs(p.requests) do
    local name, ends = window_at(w.key, w.seconds, now_ms)
    if redis.call('INCRBY', name, admitted) == admitted then
      redis.call('PEXPIREAT', name, ends + 1000)
    end
  end
  if p.concurrency then
    local leases = {}
    for j = 1, admitted do
      leases[2 * j - 1], leases[2 * j] = now_ms + p.concurrency.lease_ms, admissions[j].id
    end
    redis.call('ZADD', p.concurrency.key, unpack(leases))
    redis.call('PEXPIRE', p.concurrency.key, p.concurrency.lease_ms * 2)
  end
  local mark = string.format('a:%d', now_ms)
  for j = 1, admitted do
    redis.call('SET', p.markers .. admissions[j].id, mark, 'PX', p.marker_ms)
    if p.holds and (admissions[j].hold or 0) > 0 then
      hold(p, admissions[j].id, admissions[j].hold, now_ms + p.holds.lease_ms)
    end
  end
end
return {now_ms, admitted, live, requests, tokens, spent, {held_key, held_tenant}, pinned}
