-- wrk script: POST one image as multipart/form-data field "file" (what a browser or curl -F sends).
--   wrk -t1 -c8 -d10s -s bench/multipart.lua http://127.0.0.1:8000/denoise -- digit.png
-- done() is bench/report.lua's: one line "BENCH {json}" that bench/_common.py parses.

local boundary = "aebench5f0c1e7d2a"

-- wrk loads this file by path; report.lua sits beside it.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

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
