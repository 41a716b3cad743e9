-- wrk script: POST a file as the raw body, with a Content-Type and optionally one more header.
--   wrk -t1 -c8 -d10s -s bench/body.lua http://127.0.0.1:8000/v2/models/mnist-s2d/infer -- \
--       tensor.bin application/octet-stream "Inference-Header-Content-Length: 182"
-- done() is bench/report.lua's: one line "BENCH {json}" that bench/_common.py parses.

-- wrk loads this file by path; report.lua sits beside it.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

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
