-- The launch-day sign-up for Debian's wrk, as a second opinion on the
-- latency standby-bench reports (wrk is C, one event loop per thread).
-- Each request posts a distinct valid Belgian national number; one in 20
-- repeats the number posted 1,001 requests earlier in the same thread (never
-- itself a repeat).
-- wrk keeps no record of which were answered 202, so it cannot check the
-- database afterwards: standby-bench signup does that.
--
--   wrk -t2 -c1000 -d10s --latency -s crates/bench/wrk/signup.lua http://127.0.0.1:18090
--
-- Only ever point it at 127.0.0.0/8.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local threads = 0
function setup(thread)
  thread:set("first", threads * 10000000)
  threads = threads + 1
end

local n = 0
function init(args)
  n = first
end

-- Belgian national number: YYMMDD, a 3-digit serial, then 97 - (the nine
-- digits mod 97), for people born in the 1900s.
local function national_number(k)
  local d = 1 + (k % 28)
  local m = 1 + math.floor(k / 28) % 12
  local y = 40 + math.floor(k / 336) % 50
  local s = 1 + math.floor(k / 16800) % 997
  local base = ((y * 100 + m) * 100 + d) * 1000 + s
  return string.format("%09d%02d", base, 97 - (base % 97))
end

request = function()
  n = n + 1
  local k = n
  if n % 20 == 19 and n - first > 1001 then
    k = n - 1001
  end
  local body = string.format(
    '{"country":"BE","national_id":"%s","title":"mx","first_name":"Bench",' ..
    '"last_name":"Person %d","email":"bench%d@example.org","language":"fr","consent":true}',
    national_number(k), n, n)
  return wrk.format(nil, "/api/v1/registrations", nil, body)
end

done = function(summary, latency, requests)
  io.write(string.format("non-2xx answers: %d, socket errors: connect %d read %d write %d timeout %d\n",
    summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout))
end
