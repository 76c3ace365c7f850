-- The releases of one policy's requests, one or many: each is applied once. Its marker says
-- whether: absent (admitted from memory, or too long ago) or 'a:<ms>' (admitted here):
-- apply it and set 'r'; 'r' (released) or 'c' (cancelled): skip it. The applied ones free
-- their leases, charge the token windows at the instant each ended, and add to the ledger,
-- the sums and the spend of that instant's day, one write per counter and measure for all.
-- ARGV: deadline_ms, the policy (a record), the releases: [{"id", "model", "tokens",
--       "m": {measure code: amount}, "lease"?, "record"? (stored object ids now the
--       tenant's: a response and its output items), "upstream"? (the upstream that holds
--       them, the value recorded), "forget"? (a response id deleted),
--       "held"? (it holds an estimate: dropped now), "admitted_ms"? (admitted from memory:
--       its request units are counted here, in the windows of that instant), "ended_ms"?
--       (a replay: when it ended; else now)}]
-- Returns: now_ms, how many were applied (-1: past the deadline, nothing done), then the
--          ticks spent per spend budget now (every replica remembers them for an outage)
if late then return {now_ms, -1} end
local p, releases = cjson.decode(ARGV[2]), cjson.decode(ARGV[3])
local markers = {}
for j, r in ipairs(releases) do markers[j] = p.markers .. r.id end
local marks = redis.call('MGET', unpack(markers))
local applied, seen, leases, tokens, days = 0, {}, {}, {}, {}
for j, r in ipairs(releases) do
  local mark = marks[j]
  if not seen[r.id] and (not mark or string.sub(mark, 1, 2) == 'a:') then
    seen[r.id] = true  -- a release twice in one call: the first applied it
    applied = applied + 1
    redis.call('SET', markers[j], 'r', 'PX', p.marker_ms)
    local at = r.ended_ms or now_ms
    if r.admitted_ms then
      for _, w in ipairs(p.requests) do add_window(w.key, w.seconds, r.admitted_ms, 1) end
    end
    if r.tokens > 0 then tokens[at] = (tokens[at] or 0) + r.tokens end
    if r.lease then leases[#leases + 1] = r.lease end
    if r.held and p.holds then drop_hold(p, r.id) end  -- the billed cost replaces it
    local day = periods(at)
    local charges = days[day]
    if not charges then
      charges = {at = at, by_model = {}, total = {}}
      days[day] = charges
    end
    charges.by_model[r.model] = charges.by_model[r.model] or {}
    sum_into(charges.by_model[r.model], r.m)
    sum_into(charges.total, r.m)
    if r.forget then redis.call('DEL', p.responses .. r.forget) end
    for _, object_id in ipairs(r.record or {}) do
      redis.call('SET', p.responses .. object_id, r.upstream or 1, 'PX', p.response_ms)
    end
  end
end
for at, amount in pairs(tokens) do
  for _, w in ipairs(p.tokens) do add_window(w.key, w.seconds, at, amount) end
end
if #leases > 0 and p.concurrency then redis.call('ZREM', p.concurrency.key, unpack(leases)) end
for _, charges in pairs(days) do account(p, charges.at, charges.by_model, charges.total) end
return {now_ms, applied, spent_now(p, now_ms)}
