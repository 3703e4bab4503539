-- POST /v1/token grant_type=refresh_token: each request spends a refresh
-- token and its answer's successor goes back into the pool, so every token
-- is presented once (a repeat would be reuse, which ends the session). The
-- pool (BENCH_TOKENS, one refresh token per line) must hold at least as
-- many tokens as there are connections per thread.
local report = dofile(os.getenv("BENCH_DIR") .. "/wrk/report.lua")
local pool = {}
for line in io.lines(os.getenv("BENCH_TOKENS")) do
  pool[#pool + 1] = line
end

function setup(thread)
  -- Threads take disjoint slices of the pool.
  thread:set("slice", thread.id)
end

function init()
  local n = tonumber(os.getenv("BENCH_THREADS")) or 1
  local mine = {}
  for k = 1, #pool do
    if (k - 1) % n == (tonumber(slice) or 1) - 1 then mine[#mine + 1] = pool[k] end
  end
  pool = mine
end

function request()
  -- An empty pool means answers came back without a successor (errors):
  -- send a token that cannot exist, counted as a non-2xx answer.
  local token = table.remove(pool) or "exhausted"
  return wrk.format("POST", nil,
    { ["Content-Type"] = "application/x-www-form-urlencoded" },
    "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  local successor = body:match('"refresh_token":"([^"]+)"')
  if successor then pool[#pool + 1] = successor end
end

done = report.done
