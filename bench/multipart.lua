-- wrk script: POST one image as multipart/form-data field "file" (what a browser or curl -F sends).
--   wrk -t1 -c8 -d10s -s bench/multipart.lua http://127.0.0.1:8000/denoise -- digit.png
-- done() prints one line "BENCH {json}" that bench/_common.py parses.

local boundary = "aebench5f0c1e7d2a"

function init(args)
  local path = assert(args[1], "usage: ... -- <image file>")
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
  wrk.body = "--" .. boundary .. "\r\n"
    .. 'Content-Disposition: form-data; name="file"; filename="digit.png"\r\n'
    .. "Content-Type: image/png\r\n\r\n"
    .. data .. "\r\n--" .. boundary .. "--\r\n"
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
