-- Take back an admission whose reply never came, if it ran. Only a marker saying 'a:<ms>'
-- means it ran and was neither released nor cancelled: then each request window it counted
-- (found from that instant, so across a window's end too) loses its unit if the counter is
-- still there (never below 0), its lease goes, and the marker says 'c'. Absent (it never
-- ran, or ran past its deadline and did nothing), 'r' or 'c': nothing.
-- ARGV: deadline_ms, the policy (a record), the admission: {"id", "lease"?}
-- Returns: now_ms, 1 taken back, 0 nothing to take back, -1 past the deadline
if late then return {now_ms, -1} end
local p, admission = cjson.decode(ARGV[2]), cjson.decode(ARGV[3])
local marker = p.markers .. admission.id
local mark = redis.call('GET', marker)
if not mark or string.sub(mark, 1, 2) ~= 'a:' then return {now_ms, 0} end
local admitted = tonumber(string.sub(mark, 3))
for _, w in ipairs(p.requests) do
  local name = window_at(w.key, w.seconds, admitted)
  if tonumber(redis.call('GET', name) or '0') > 0 then redis.call('DECR', name) end
end
if admission.lease and p.concurrency then
  redis.call('ZREM', p.concurrency.key, admission.lease)
end
if p.holds then drop_hold(p, admission.id) end
redis.call('SET', marker, 'c', 'PX', p.marker_ms)
return {now_ms, 1}
