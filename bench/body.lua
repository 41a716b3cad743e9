-- wrk script: POST a file as the raw body, with a Content-Type and optionally one more header.
--   wrk -t1 -c8 -d10s -s bench/body.lua http://127.0.0.1:8000/v2/models/mnist-s2d/infer -- \
--       tensor.bin application/octet-stream "Inference-Header-Content-Length: 182"
-- done() prints the same "BENCH {json}" line as multipart.lua.

function init(args)
  local path = assert(args[1], "usage: ... -- <file> <content-type> [header: value]")
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = args[2] or "application/octet-stream"
  if args[3] then
    local name, value = args[3]:match("^([^:]+):%s*(.*)$")
    wrk.headers[name] = value
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "non_2xx": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
