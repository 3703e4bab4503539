-- GET with a different bearer token on every request, read from the file
-- BENCH_TOKENS (one per line; more tokens than requests, so none repeats
-- and the server's cache of verified tokens never hits). Each wrk thread
-- starts at its own offset. BENCH_EXTRA adds fixed headers, as in header.lua.
local report = dofile(os.getenv("BENCH_DIR") .. "/wrk/report.lua")
local tokens = {}
for line in io.lines(os.getenv("BENCH_TOKENS")) do
  tokens[#tokens + 1] = line
end
local i = 0
local extra = {}
for line in (os.getenv("BENCH_EXTRA") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then extra[name] = value end
end

function setup(thread)
  thread:set("offset", math.random(#tokens))
end

function init()
  i = tonumber(offset) or 0
end

function request()
  i = i % #tokens + 1
  local headers = { ["Authorization"] = "Bearer " .. tokens[i] }
  for name, value in pairs(extra) do headers[name] = value end
  return wrk.format("GET", nil, headers)
end

done = report.done
