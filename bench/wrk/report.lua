-- Shared by every scenario: after the run, one JSON line on stdout with
-- requests per second, latency percentiles (ms) and the non-2xx count, for
-- bench/run.sh to collect. wrk counts a non-2xx/3xx answer in
-- summary.errors.status.
local M = {}

function M.done(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format(
    '{"requests":%d,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end

return M
