-- Redis's time in ms, and whether the call came past its caller's deadline (ARGV[1], 0 for
-- none): a hung Redis runs queued commands late, after their callers have given up.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[1])
local late = deadline > 0 and now_ms > deadline
