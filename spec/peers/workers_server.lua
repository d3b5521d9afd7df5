-- A multi-worker HTTP server for spec/workers_spec.lua.
-- usage: lua5.4 workers_server.lua PORT N [crash|tcp]
--   GET /      -> "<worker id> <pid>"
--   GET /slow  -> the same after 1 s
-- crash: every worker raises at start-up. tcp: loom.tcp.serve, a line per
-- connection answered with "<worker id> <pid>".
local loom = require "loom"
local port, n, mode = tonumber(arg[1]), tonumber(arg[2]) or arg[2], arg[3]

local function pid()
  local f = assert(io.open("/proc/self/stat"))
  local p = f:read("n")
  f:close()
  return p
end

loom.run(function()
  local me = ("%s %d"):format(tostring(loom.worker_id()), pid())
  if mode == "crash" and loom.worker_id() then error("broken at start-up") end
  if loom.worker_id() then print("worker up " .. me) end
  local ok, err
  if mode == "tcp" then
    ok, err = loom.tcp.serve("127.0.0.1", port, function(s)
      if s:read_line() then s:write(me, "\n") end
    end, { workers = n, shutdown_timeout = 5 })
  else
    ok, err = loom.http.serve("127.0.0.1", port, function(req)
      if req.path == "/slow" then loom.sleep(1) end
      return me
    end, { workers = n, shutdown_timeout = 5 })
  end
  if not loom.worker_id() then print("supervisor done", ok, err) end
end)
