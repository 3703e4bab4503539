-- POST with a fixed body (BENCH_BODY, a form) and fixed headers
-- (BENCH_HEADER lines "Name: value"): introspection with a client's
-- credentials, the same token on every request.
local report = dofile(os.getenv("BENCH_DIR") .. "/wrk/report.lua")
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or ""
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
for line in (os.getenv("BENCH_HEADER") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end
done = report.done
