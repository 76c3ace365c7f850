-- The day, month and rate window an instant falls in, on Redis's clock: days since 1970 to a
-- civil date and back (Howard Hinnant's algorithms), so periods come from `TIME` like all else.
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
-- The counter of the window of `seconds` that the instant `ms` falls in, and when it ends.
local function window_at(base, seconds, ms)
  local index = math.floor(ms / (seconds * 1000))
  return base .. ':' .. index, (index + 1) * seconds * 1000
end
