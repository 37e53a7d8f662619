-- wrk: GET with an optional bearer token (BENCH_TOKEN).
function init(args)
  local token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
end

local reported = false

function response(status, headers, body)
  -- The first failure per thread, so a failed run says why (run.py rejects any).
  if status >= 300 and not reported then
    reported = true
    io.stderr:write("status " .. status .. ": " .. string.sub(body, 1, 300) .. "\n")
  end
end
