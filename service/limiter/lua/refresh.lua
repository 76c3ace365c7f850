-- Renew this process's live leases, or holds, in one sorted set (XX: one already gone stays
-- gone), and keep the set itself `keep_ms` longer.
-- KEYS: the sorted set; ARGV: lease_ms, keep_ms, then the ids
local t = redis.call('TIME')
local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', due, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
