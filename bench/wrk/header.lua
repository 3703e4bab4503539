-- GET with fixed headers: BENCH_HEADER="Name: value" (a bearer token or a
-- session cookie, the same on every request), plus BENCH_EXTRA, more
-- "Name: value" lines (the original request's headers for /v1/verify).
local report = dofile(os.getenv("BENCH_DIR") .. "/wrk/report.lua")
for line in ((os.getenv("BENCH_HEADER") or "") .. "\n" .. (os.getenv("BENCH_EXTRA") or "")):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end
done = report.done
