-- POST /v1/session/token with a session cookie (BENCH_HEADER), appending
-- each answer's access token to BENCH_TOKENS: a supply of distinct tokens
-- of one live session for the fresh-token scenarios. Run with one thread.
local report = dofile(os.getenv("BENCH_DIR") .. "/wrk/report.lua")
local out = assert(io.open(os.getenv("BENCH_TOKENS"), "a"))
-- Line-buffered: wrk ends without closing its threads' Lua states.
out:setvbuf("line")
local name, value = os.getenv("BENCH_HEADER"):match("^([^:]+):%s*(.*)$")
wrk.method = "POST"
wrk.headers[name] = value

function response(status, headers, body)
  local token = body:match('"access_token":"([^"]+)"')
  if token then out:write(token, "\n") end
end

done = report.done
