-- A key's budgets and usage, read from the running sums: its cost does not grow with the
-- ledger. Each call first counts in the key's one-second read window; past the policy's
-- `reads_per_second` it reads nothing, so no tenant can keep Redis busy through it.
-- ARGV: 0 (no deadline: it writes only its read count), the policy (a record)
-- Returns: now_ms, 0 (too many reads), ms to the next second; or now_ms, 1, live leases,
--          {units per request window}, {units per token window}, {ticks per budget}, then
--          the day and month sums of the key and of its tenant (HGETALL lists; {} for none)
local p = cjson.decode(ARGV[2])
local reads = p.reads .. ':' .. math.floor(now_ms / 1000)
local count = redis.call('INCR', reads)
if count == 1 then redis.call('PEXPIRE', reads, 2000) end
if count > p.reads_per_second then return {now_ms, 0, 1000 - now_ms % 1000} end
local requests, tokens, spent, live = standing(p, now_ms, false)
local day, month = periods(now_ms)
local sums = {}
for i = 1, 2 do
  local base = p.sums[i]
  sums[2 * i - 1] = base and redis.call('HGETALL', base .. ':' .. day) or {}
  sums[2 * i] = base and redis.call('HGETALL', base .. ':' .. month) or {}
end
return {now_ms, 1, live, requests, tokens, spent, sums[1], sums[2], sums[3], sums[4]}
