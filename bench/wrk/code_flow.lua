-- The authorization code flow of a signed-in user, over and over: GET the
-- authorization endpoint with the session cookie (BENCH_COOKIE; the
-- request in BENCH_AUTHORIZE, a first-party client with PKCE), take the
-- code from the 302's Location, and exchange it at /v1/token with HTTP
-- Basic (BENCH_BASIC), the redirect URI (BENCH_REDIRECT, encoded) and the
-- verifier (BENCH_VERIFIER). Codes wait in a queue: any connection may
-- exchange any code. After the run, the JSON line also carries the
-- completed flows (token answers 200) and authorizations per second.
local report = dofile(os.getenv("BENCH_DIR") .. "/wrk/report.lua")
local authorize = os.getenv("BENCH_AUTHORIZE")
local cookie = os.getenv("BENCH_COOKIE")
local basic = os.getenv("BENCH_BASIC")
local redirect = os.getenv("BENCH_REDIRECT")
local verifier = os.getenv("BENCH_VERIFIER")
local codes = {}
flows = 0
codes_issued = 0
failed = 0

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function request()
  local code = table.remove(codes)
  if code then
    return wrk.format("POST", "/v1/token", {
      ["Authorization"] = basic,
      ["Content-Type"] = "application/x-www-form-urlencoded",
    }, "grant_type=authorization_code&code=" .. code .. "&redirect_uri=" .. redirect
      .. "&code_verifier=" .. verifier)
  end
  return wrk.format("GET", authorize, { ["Cookie"] = cookie })
end

function response(status, headers, body)
  if status == 302 then
    local code = (headers["location"] or headers["Location"] or ""):match("[?&]code=([^&]+)")
    if code then
      table.insert(codes, code)
      codes_issued = codes_issued + 1
    else
      failed = failed + 1
    end
  elseif status == 200 then
    flows = flows + 1
  else
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  local f, c, bad = 0, 0, 0
  for _, t in ipairs(threads) do
    f = f + t:get("flows")
    c = c + t:get("codes_issued")
    bad = bad + t:get("failed")
  end
  local secs = summary.duration / 1e6
  io.write(string.format(
    '{"requests":%d,"rps":%.1f,"flows":%d,"flows_per_s":%.1f,"codes_per_s":%.1f,"failed":%d,'
      .. '"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.requests / secs, f, f / secs, c / secs, bad,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
