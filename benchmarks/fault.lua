-- wrk script of benchmarks/fault_benchmark.py: POST /predict with the JSON bodies of a file
-- (one per line, cycled), counting answers by status. One wrk thread (-t1) is assumed.
--   wrk -t1 -c8 -d120s --timeout 10s -s benchmarks/fault.lua http://127.0.0.1:PORT -- BODIES [TOKEN]
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = line
  end
  headers = { ["Content-Type"] = "application/json" }
  if args[2] ~= nil and args[2] ~= "" then
    headers["Authorization"] = "Bearer " .. args[2]
  end
  counts = {}
  idx = 0
end

function request()
  idx = idx % #bodies + 1
  return wrk.format("POST", "/predict", headers, bodies[idx])
end

function response(status, headers, body)
  local key = tostring(status)
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests)
  local parts = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for k, v in pairs(c) do
      parts[#parts + 1] = string.format('"%s": %d', k, v)
    end
  end
  local e = summary.errors
  io.write("FAULT_RESULT {\"statuses\": {" .. table.concat(parts, ", ") .. "}, ")
  io.write(string.format('"requests": %d, "duration_us": %d, ', summary.requests, summary.duration))
  io.write(string.format('"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ',
    e.connect, e.read, e.write, e.timeout))
  io.write(string.format('"latency_ms": {"p50": %.2f, "p90": %.2f, "p99": %.2f, "max": %.2f}}\n',
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
