-- POST /v1/login with the right password, cycling through the accounts of
-- BENCH_ACCOUNTS (one email per line) so that no account has more than a
-- login or two in flight: the attempts of one account from one address take
-- turns (none is refused, but they run one at a time). With a single
-- account in the file, the same script measures exactly that.
local report = dofile(os.getenv("BENCH_DIR") .. "/wrk/report.lua")
local accounts = {}
for line in io.lines(os.getenv("BENCH_ACCOUNTS")) do
  accounts[#accounts + 1] = line
end
local password = os.getenv("BENCH_PASSWORD")
local i = 0

function request()
  i = i % #accounts + 1
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" },
    string.format('{"email":"%s","password":"%s"}', accounts[i], password))
end

done = report.done
