-- wrk script of the serving benchmarks (serve_load.py, serve_ab.py, fault_benchmark.py): POST
-- the JSON bodies of a file (one per line, cycled) to PATH (default /predict), counting answers
-- by status; with NEW_VERSION, also the answers from an older version after the first one from
-- NEW_VERSION (hot reload); with TOKEN, as a bearer token. One wrk thread (-t1).
--   wrk -t1 -c32 -d10s --timeout 30s -s benchmarks/serve_load.lua http://127.0.0.1:PORT -- BODIES [PATH] [NEW_VERSION] [TOKEN]
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = line
  end
  path = (args[2] ~= nil and args[2] ~= "") and args[2] or "/predict"
  new_version = tonumber(args[3] or "")
  headers = { ["Content-Type"] = "application/json" }
  if args[4] ~= nil and args[4] ~= "" then
    headers["Authorization"] = "Bearer " .. args[4]
  end
  counts = {}
  seen_new = 0
  old_after_new = 0
  idx = 0
end

function request()
  idx = idx % #bodies + 1
  return wrk.format("POST", path, headers, bodies[idx])
end

function response(status, headers, body)
  local key = tostring(status)
  counts[key] = (counts[key] or 0) + 1
  if new_version ~= nil and status == 200 then
    local v = tonumber(body:match('.*"version":%s*(%d+)'))
    if v == new_version then
      seen_new = 1
    elseif seen_new == 1 then
      old_after_new = old_after_new + 1
    end
  end
end

function done(summary, latency, requests)
  local parts = {}
  local old = 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do
      parts[#parts + 1] = string.format('"%s": %d', k, v)
    end
    old = old + t:get("old_after_new")
  end
  local e = summary.errors
  io.write("LOAD_RESULT {\"statuses\": {" .. table.concat(parts, ", ") .. "}, ")
  io.write(string.format('"requests": %d, "duration_us": %d, "old_after_new": %d, ', summary.requests,
    summary.duration, old))
  io.write(string.format('"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ',
    e.connect, e.read, e.write, e.timeout))
  io.write(string.format('"latency_ms": {"p50": %.2f, "p90": %.2f, "p95": %.2f, "p99": %.2f, "max": %.2f}}\n',
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
