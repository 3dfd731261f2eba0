-- wrk script: POST the reference payload with the API token; optional request cap.
-- env: BENCH_TOKEN, BENCH_MAX_REQUESTS (per wrk thread; 0 = run for the duration)
wrk.method = "POST"
wrk.body = '{"name":"bench","items":[1,2,3]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["token"] = os.getenv("BENCH_TOKEN")

local max_requests = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "0")
local sent = 0

request = function()
  sent = sent + 1
  return wrk.format()
end

response = function(status, headers, body)
  if max_requests > 0 and sent >= max_requests then
    wrk.thread:stop()
  end
end
