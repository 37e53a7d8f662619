-- wrk: POST one recognition per request, each with its own Idempotency-Key.
-- The key is built from the wrk thread's number and a per-thread counter, so no
-- two requests of one run (or of two runs: the run's nonce) share a key.
-- Environment: BENCH_BODY (the JSON body), BENCH_TOKEN (bearer, optional),
-- BENCH_NONCE (unique per run), BENCH_KEYED ("1": send Idempotency-Key).

local counter = 0
local next_id = 0
-- thread_id is a global: setup() sets it in each thread's own Lua state (a local
-- declared here would shadow it and every thread would send the same keys).
thread_id = 0
local keyed = os.getenv("BENCH_KEYED") == "1"
local nonce = os.getenv("BENCH_NONCE") or "bench"

function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
end

function init(args)
  wrk.method = "POST"
  wrk.body = os.getenv("BENCH_BODY")
  wrk.headers["Content-Type"] = "application/json"
  local token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
end

function request()
  counter = counter + 1
  if keyed then
    -- wrk.format's headers replace wrk.headers (Host, Authorization, ...): copy them.
    local headers = {}
    for name, value in pairs(wrk.headers) do headers[name] = value end
    headers["Idempotency-Key"] = nonce .. "-" .. thread_id .. "-" .. counter
    return wrk.format(nil, nil, headers, nil)
  end
  return wrk.format()
end

local reported = false

function response(status, headers, body)
  -- The first refusal per thread, so a failed run says why (run.py rejects any).
  if status >= 300 and not reported then
    reported = true
    io.stderr:write("status " .. status .. ": " .. string.sub(body, 1, 300) .. "\n")
  end
end
