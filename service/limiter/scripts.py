"""The limiter's Lua scripts: admit, release, cancel a given-up admission, snapshot, refresh.

Each runs atomically in Redis and touches only keys under one tenant's hash tag (Cluster).
`redis_store` calls them; their KEYS and ARGV are documented above each one.
"""

MARKER_MS = 300_000  # how long an admission's marker lives, and a release's outlives it

# Redis's time in ms; `late`: past the caller's deadline (ARGV[1], 0 for none), when a
# script must do nothing (its caller has given up, or will before the reply arrives).
NOW = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[1])
local late = deadline > 0 and now_ms > deadline
"""

# Calendar periods on Redis's clock: days since 1970 to a civil date and back (Howard
# Hinnant's algorithms), so the month, and when it ends, come from `TIME` like the windows.
CALENDAR = """
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100)
    + math.floor((153 * mp + 2) / 5) + d - 1
  return era * 146097 + doe - 719468
end
-- The day and month (names, and when each ends in ms) that the instant `ms` falls in.
local function periods(ms)
  local z = math.floor(ms / 86400000)
  local y, m, d = civil(z)
  local ny, nm = y, m + 1
  if nm == 13 then ny, nm = y + 1, 1 end
  return string.format('%04d-%02d-%02d', y, m, d), string.format('%04d-%02d', y, m),
    (z + 1) * 86400000, days_from_civil(ny, nm, 1) * 86400000
end
"""

# The admissions of one policy made in one event-loop turn of one process, in one call (an
# owner check comes alone). They ask for the same, so they are decided as that many calls in
# a row would decide them: the first `admitted` are admitted (a unit in each request window,
# a lease each, a marker each), the rest refused for the one reason that stops the first of
# them. An admission's marker, 'a:<now_ms>' (the instant its windows were counted in), lets
# CANCEL take it back if its reply is lost.
# KEYS: request window bases..., token window bases..., [concurrency set],
#       [key spend base, [tenant sums base]] (with spend budgets), [owned response key],
#       then each admission's marker (the key its release and its cancellation use)
# ARGV: deadline_ms, n_admissions, n_requests, n_tokens, has_concurrency, n_spend,
#       check_owner, (limit, seconds) per window..., (sums 1 key / 2 tenant, 'd'|'m', ticks)
#       per budget..., [cap, lease_ms, then each admission's lease id]
# Returns: now_ms, admitted (-1: past the deadline, nothing done), the reason the others were
#          refused, retry_ms, the spent budget's index (0: none), then per window (requests,
#          then tokens): its units before these admissions, ms until it resets
ADMIT = (
    CALENDAR
    + f"local MARKER_MS = {MARKER_MS}\n"
    + NOW
    + """
if late then return {now_ms, -1, '', 0, 0} end
local n, nreq, ntok = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local hasconc, nspend = tonumber(ARGV[5]), tonumber(ARGV[6])
local markers = #KEYS - n  -- the markers are KEYS[markers + 1 .. markers + n]
if ARGV[7] == '1' and redis.call('EXISTS', KEYS[markers]) == 0 then
  return {now_ms, 0, 'not_found', 0, 0}
end
local a = 8
local names, used, limits, periods_s, resets, indexes = {}, {}, {}, {}, {}, {}
for i = 1, nreq + ntok do
  local limit, period = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local index = math.floor(now_ms / (period * 1000))
  names[i], limits[i] = KEYS[i] .. ':' .. index, limit
  periods_s[i], resets[i], indexes[i] = period, (index + 1) * period * 1000 - now_ms, index
end
-- One MGET for every window's counter: each redis.call costs ~1 us beyond its command.
local counts = #names > 0 and redis.call('MGET', unpack(names)) or {}
-- How many fit: each admission takes a unit of every request window; a spent token window
-- or budget admits none; the concurrency cap admits up to its free slots.
local admitted = n
for i = 1, nreq + ntok do
  local u = tonumber(counts[i] or '0')
  used[i] = u
  if i <= nreq then
    admitted = math.min(admitted, math.max(0, limits[i] - u))
  elseif u >= limits[i] then
    admitted = 0
  end
end
local spent, spent_retry = 0, 0
if nspend > 0 then
  local day, month, day_end, month_end = periods(now_ms)
  local sums = nreq + ntok + hasconc
  for j = 1, nspend do
    local scope, period, ticks = tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2])
    a = a + 3
    local name = KEYS[sums + scope] .. ':' .. (period == 'd' and day or month)
    local value  -- (not `a and b or c`: a key's absent counter is `false`)
    if scope == 1 then
      value = redis.call('GET', name)
    else
      value = redis.call('HGET', name, '$')
    end
    if tonumber(value or '0') >= ticks then
      local reset = (period == 'd' and day_end or month_end) - now_ms
      if spent == 0 then
        spent, spent_retry = j, reset
      elseif reset > spent_retry then
        spent_retry = reset
      end
    end
  end
  if spent > 0 then admitted = 0 end
end
local zset, live
if hasconc == 1 then
  zset = KEYS[nreq + ntok + 1]
  redis.call('ZREMRANGEBYSCORE', zset, '-inf', now_ms)
  live = redis.call('ZCARD', zset)
  admitted = math.min(admitted, math.max(0, tonumber(ARGV[a]) - live))
end
-- Why the first refused one (which sees the units of the ones before it) is refused.
local reason, retry = '', 0
if admitted < n then
  for i = 1, nreq + ntok do
    local full = i <= nreq and used[i] + admitted + 1 > limits[i]
    if full or (i > nreq and used[i] >= limits[i]) then
      if reason == '' then
        reason = i <= nreq and 'rate_limit_exceeded' or 'tokens_limit_exceeded'
      end
      if resets[i] > retry then retry = resets[i] end
    end
  end
  if spent > 0 then
    reason, retry = 'spend_limit_exceeded', spent_retry
  elseif reason == '' then
    reason, retry = 'concurrency_limit_exceeded', 1000
  end
end
if admitted > 0 then
  for i = 1, nreq do
    if redis.call('INCRBY', names[i], admitted) == admitted then
      redis.call('PEXPIREAT', names[i], (indexes[i] + 1) * periods_s[i] * 1000 + 1000)
    end
  end
  if zset then
    local lease_ms = tonumber(ARGV[a + 1])
    local leases = {}
    for j = 1, admitted do
      leases[2 * j - 1], leases[2 * j] = now_ms + lease_ms, ARGV[a + 1 + j]
    end
    redis.call('ZADD', zset, unpack(leases))
    redis.call('PEXPIRE', zset, lease_ms * 2)
  end
  local mark = string.format('a:%d', now_ms)
  for j = 1, admitted do redis.call('SET', KEYS[markers + j], mark, 'PX', MARKER_MS) end
end
local out = {now_ms, admitted, reason, retry, spent}
for i = 1, nreq + ntok do
  out[#out + 1] = used[i]
  out[#out + 1] = resets[i]
end
return out
"""
)

# What a release charges, shared by RELEASE and RELEASE_MANY (after CALENDAR): `add` to a
# counter, to a rate `window`, and `account` for the ledger, sums and spend. `charges`:
# model -> the six measures (r i c o x $, numbers or digit strings), `models` their order,
# `total` the measures summed over the models; all on the day (and month) of `at`. Zero
# measures are not written; expiries are set when a counter, row or field is created.
ACCOUNTING = """
local CODES = {'r', 'i', 'c', 'o', 'x', '$'}
local function add(name, amount, expiry)
  if redis.call('INCRBY', name, amount) == tonumber(amount) then
    redis.call('PEXPIREAT', name, expiry)
  end
end
-- Add to the window of `period` seconds that the instant `at` (ms) falls in.
local function window(base, period, at, amount)
  local index = math.floor(at / (period * 1000))
  add(base .. ':' .. index, amount, (index + 1) * period * 1000 + 1000)
end
-- `sums`: the running day and month sums to add to (the key's, then its tenant's if any).
local function account(ledger, key_id, models, charges, total, spend, sums, at, retention)
  local day, month, day_end, month_end = periods(at)
  local row = ledger .. ':' .. day .. ':' .. key_id
  for _, model in ipairs(models) do
    local m = charges[model]
    if redis.call('HINCRBY', row, 'r|' .. model, m[1]) == tonumber(m[1]) then
      redis.call('PEXPIREAT', row, day_end + retention)
    end
    for j = 2, 6 do
      if tonumber(m[j]) ~= 0 then redis.call('HINCRBY', row, CODES[j] .. '|' .. model, m[j]) end
    end
  end
  for _, base in ipairs(sums) do
    for _, s in ipairs({{base .. ':' .. day, day_end}, {base .. ':' .. month, month_end}}) do
      if redis.call('HINCRBY', s[1], 'r', total[1]) == tonumber(total[1]) then
        redis.call('PEXPIREAT', s[1], s[2] + 86400000)
      end
      for j = 2, 6 do
        if tonumber(total[j]) ~= 0 then redis.call('HINCRBY', s[1], CODES[j], total[j]) end
      end
    end
  end
  if tonumber(total[6]) ~= 0 then
    add(spend .. ':' .. day, total[6], day_end + 86400000)
    add(spend .. ':' .. month, total[6], month_end + 86400000)
  end
end
"""

# Releases of requests admitted from memory, and replays of releases Redis did not confirm.
# KEYS: marker, request window bases (admitted from memory only)..., token window bases...,
#       [concurrency set], ledger base, key spend base, key sums base, [tenant sums base],
#       responses base
# ARGV: deadline_ms, ended_ms (0: now), admitted_ms, marker_ms, n_requests, n_tokens,
#       has_concurrency, has_tenant, seconds per window..., then lease_id, key_id, model,
#       total_tokens, the six measures (r i c o x $), retention_ms, record_id, forget_id,
#       response_ms   ('' for no lease or id)
# A request admitted from memory counts one unit in the windows of its admission; tokens,
# the ledger, spend and the tenant's sums go to the day of the moment it ended.
# The marker: absent (a memory admission, or one older than the marker) or 'a:<ms>' (admitted
# in Redis): apply, and set it to 'r'; anything else ('r' released, 'c' cancelled, or an older
# version's '1'): skip.
# Returns: now_ms, status (1 applied, 0 applied before: skipped, -1 past the deadline)
RELEASE = (
    CALENDAR
    + ACCOUNTING
    + NOW
    + """
if late then return {now_ms, -1} end
local mark = redis.call('GET', KEYS[1])
if mark and string.sub(mark, 1, 2) ~= 'a:' then return {now_ms, 0} end
redis.call('SET', KEYS[1], 'r', 'PX', ARGV[4])
local ended, admitted = tonumber(ARGV[2]), tonumber(ARGV[3])
if ended == 0 then ended = now_ms end
local nreq, ntok = tonumber(ARGV[5]), tonumber(ARGV[6])
local hasconc, hastenant = ARGV[7] == '1', ARGV[8] == '1'
local w = 8 + nreq + ntok
for i = 1, nreq do window(KEYS[1 + i], tonumber(ARGV[8 + i]), admitted, 1) end
if ARGV[w + 4] ~= '0' then
  for i = nreq + 1, nreq + ntok do
    window(KEYS[1 + i], tonumber(ARGV[8 + i]), ended, ARGV[w + 4])
  end
end
local k = 2 + nreq + ntok
if hasconc then
  redis.call('ZREM', KEYS[k], ARGV[w + 1])
  k = k + 1
end
local measures = {ARGV[w + 5], ARGV[w + 6], ARGV[w + 7], ARGV[w + 8], ARGV[w + 9], ARGV[w + 10]}
local sums = hastenant and {KEYS[k + 2], KEYS[k + 3]} or {KEYS[k + 2]}
account(KEYS[k], ARGV[w + 2], {ARGV[w + 3]}, {[ARGV[w + 3]] = measures}, measures,
  KEYS[k + 1], sums, ended, tonumber(ARGV[w + 11]))
local responses = KEYS[#KEYS]
if ARGV[w + 13] ~= '' then redis.call('DEL', responses .. ':' .. ARGV[w + 13]) end
if ARGV[w + 12] ~= '' then
  redis.call('SET', responses .. ':' .. ARGV[w + 12], 1, 'PX', ARGV[w + 14])
end
return {now_ms, 1}
"""
)

# The releases of one policy's requests admitted in Redis that ended in the same event-loop
# turn of one process, in one call: each marker as in RELEASE, then what the applied ones
# charge, added up (one write per counter and measure, however many releases: Lua's cost is
# per redis.call). The client sends only measures below 2^46, so that 64 of them add up
# exactly in Lua's doubles; larger ones go through RELEASE one by one.
# KEYS: token window bases..., [concurrency set], ledger base, key spend base,
#       key sums base, [tenant sums base], responses base, then one marker per release
# ARGV: deadline_ms, marker_ms, n_tokens, has_concurrency, has_tenant, key_id, retention_ms,
#       response_ms, seconds per token window..., then per release: lease_id, model,
#       total_tokens, the six measures (r i c o x $), record_id, forget_id ('' for none)
# Returns: now_ms, how many were applied (the others' markers said they were before; -1:
#          past the deadline, nothing done)
RELEASE_MANY = (
    CALENDAR
    + ACCOUNTING
    + NOW
    + """
if late then return {now_ms, -1} end
local ntok, hasconc, hastenant = tonumber(ARGV[3]), ARGV[4] == '1', ARGV[5] == '1'
local first = 8 + ntok
local fixed = ntok + (hasconc and 1 or 0) + (hastenant and 5 or 4)
local n = #KEYS - fixed
local markers = {}
for j = 1, n do markers[j] = KEYS[fixed + j] end
local marks = redis.call('MGET', unpack(markers))
local applied, tokens, leases, models, charges = 0, 0, {}, {}, {}
local total = {0, 0, 0, 0, 0, 0}
local responses = KEYS[fixed]
local seen = {}  -- a marker twice in one call: its second release was applied by its first
for j = 1, n do
  local mark = marks[j]
  if not seen[markers[j]] and (not mark or string.sub(mark, 1, 2) == 'a:') then
    seen[markers[j]] = true
    redis.call('SET', markers[j], 'r', 'PX', ARGV[2])
    applied = applied + 1
    local a = first + (j - 1) * 11
    if ARGV[a + 1] ~= '' then leases[#leases + 1] = ARGV[a + 1] end
    tokens = tokens + tonumber(ARGV[a + 3])
    local model = ARGV[a + 2]
    local m = charges[model]
    if not m then
      m = {0, 0, 0, 0, 0, 0}
      charges[model] = m
      models[#models + 1] = model
    end
    for c = 1, 6 do
      local v = tonumber(ARGV[a + 3 + c])
      m[c], total[c] = m[c] + v, total[c] + v
    end
    if ARGV[a + 11] ~= '' then redis.call('DEL', responses .. ':' .. ARGV[a + 11]) end
    if ARGV[a + 10] ~= '' then
      redis.call('SET', responses .. ':' .. ARGV[a + 10], 1, 'PX', ARGV[8])
    end
  end
end
if applied == 0 then return {now_ms, 0} end
if tokens > 0 then
  for i = 1, ntok do window(KEYS[i], tonumber(ARGV[8 + i]), now_ms, tokens) end
end
local k = ntok + 1
if hasconc then
  if #leases > 0 then redis.call('ZREM', KEYS[k], unpack(leases)) end
  k = k + 1
end
local sums = hastenant and {KEYS[k + 2], KEYS[k + 3]} or {KEYS[k + 2]}
account(KEYS[k], ARGV[6], models, charges, total, KEYS[k + 1], sums, now_ms, tonumber(ARGV[7]))
return {now_ms, applied}
"""
)

# An admission given up (its reply never came): take it back if it ran. Only a marker saying
# 'a:<ms>' means it ran and was neither released nor cancelled: then each request window it
# counted (the index from that ms, so across a window's end too) loses its unit if the counter
# still exists (never below 0), its lease goes, and the marker says 'c'. Absent (never ran, or
# ran past its deadline and did nothing), 'r' or 'c': nothing.
# KEYS: marker, request window bases..., [concurrency set]
# ARGV: deadline_ms, marker_ms, n_requests, seconds per window..., lease_id ('' for none)
# Returns: now_ms, status (1 taken back, 0 nothing to take back, -1 past the deadline)
CANCEL = (
    NOW
    + """
if late then return {now_ms, -1} end
local mark = redis.call('GET', KEYS[1])
if not mark or string.sub(mark, 1, 2) ~= 'a:' then return {now_ms, 0} end
local admitted, nreq = tonumber(string.sub(mark, 3)), tonumber(ARGV[3])
for i = 1, nreq do
  local name = KEYS[1 + i] .. ':' .. math.floor(admitted / (tonumber(ARGV[3 + i]) * 1000))
  if tonumber(redis.call('GET', name) or '0') > 0 then redis.call('DECR', name) end
end
if ARGV[4 + nreq] ~= '' then redis.call('ZREM', KEYS[2 + nreq], ARGV[4 + nreq]) end
redis.call('SET', KEYS[1], 'c', 'PX', ARGV[2])
return {now_ms, 1}
"""
)

# A key's budgets and usage, read from the running sums: its cost in Redis does not grow with
# the ledger. Each call counts in the key's one-second read window first; past `per_second`
# reads it reads nothing (a tenant cannot make Redis busy for the others through it).
# KEYS: request window bases..., token window bases..., [concurrency set], key spend base,
#       key sums base, [tenant sums base], read window base
# ARGV: n_windows, has_concurrency, has_tenant, per_second, seconds per window...
# Returns: now_ms, 0 (refused: too many reads), ms until the next second; or now_ms, 1,
#          day_end_ms, month_end_ms, {units used per window}, live slots, key spend today,
#          key spend this month, key day, key month, tenant day, tenant month (HGETALL lists;
#          {} without a tenant)
SNAPSHOT = (
    CALENDAR
    + """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n, hasconc, hastenant = tonumber(ARGV[1]), ARGV[2] == '1', ARGV[3] == '1'
local reads = KEYS[#KEYS] .. ':' .. math.floor(now_ms / 1000)
local count = redis.call('INCR', reads)
if count == 1 then redis.call('PEXPIRE', reads, 2000) end
if count > tonumber(ARGV[4]) then return {now_ms, 0, 1000 - now_ms % 1000} end
local used = {}
for i = 1, n do
  local period = tonumber(ARGV[4 + i])
  used[i] = tonumber(redis.call('GET', KEYS[i] .. ':' .. math.floor(now_ms / (period * 1000)))
    or '0')
end
local k, live = n + 1, 0
if hasconc then
  live = redis.call('ZCOUNT', KEYS[k], '(' .. now_ms, '+inf')
  k = k + 1
end
local day, month, day_end, month_end = periods(now_ms)
local out = {now_ms, 1, day_end, month_end, used, live,
  tonumber(redis.call('GET', KEYS[k] .. ':' .. day) or '0'),
  tonumber(redis.call('GET', KEYS[k] .. ':' .. month) or '0'),
  redis.call('HGETALL', KEYS[k + 1] .. ':' .. day),
  redis.call('HGETALL', KEYS[k + 1] .. ':' .. month), {}, {}}
if hastenant then
  out[11] = redis.call('HGETALL', KEYS[k + 2] .. ':' .. day)
  out[12] = redis.call('HGETALL', KEYS[k + 2] .. ':' .. month)
end
return out
"""
)

# KEYS: concurrency set; ARGV: lease_ms, lease ids... (XX: a lease already expired stays gone)
REFRESH = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"""
