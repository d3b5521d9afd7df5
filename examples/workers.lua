-- A server on every core, reloaded without dropping a request.
--
--   lua5.4 examples/workers.lua 8080        serve on port 8080 with one worker per core
--   kill -HUP <pid>                          replace the workers one at a time (new code, new config)
--   kill -TTIN <pid> / kill -TTOU <pid>      one worker more / less
--   kill -TERM <pid> (or ^C)                 stop: requests in flight finish first
--
-- Run without a port it demonstrates itself: it serves on a free port with
-- two workers, keeps a client busy, reloads itself with SIGHUP halfway
-- through, stops itself with SIGTERM and counts what the client got.
local loom = require "loom"

local port = tonumber(arg[1])
local demo = port == nil
local scale = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

-- The handler: the same script runs in every worker. Say who answered.
local function handler(req)
  if req.path == "/slow" then loom.sleep(0.5 * scale) end
  return 200, { ["Content-Type"] = "text/plain" }, ("hello from worker %d\n"):format(loom.worker_id())
end

local function my_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end

-- The demonstration's client, in the supervisor: requests on connections of
-- their own (so the kernel spreads them over the workers), a reload in the
-- middle, then a stop with a slow request in flight.
local function client(p)
  local function get(path)
    local s = loom.tcp.connect("127.0.0.1", p)
    if not s then return nil end
    s:write("GET ", path, " HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
    local reply = s:read_all()
    s:close()
    return reply and reply:match("^HTTP/1%.1 200") and reply:match("(hello from worker %d+)")
  end
  while not loom.tcp.connect("127.0.0.1", p) do loom.sleep(0.05) end
  loom.sleep(0.5) -- both workers up
  local ok, failed, by = 0, 0, {}
  local function burst(n)
    for _ = 1, n do
      local who = get("/")
      if who then ok, by[who] = ok + 1, (by[who] or 0) + 1 else failed = failed + 1 end
    end
  end
  burst(100)
  print("reloading (SIGHUP) while requests go on")
  io.stdout:flush()
  os.execute("kill -HUP " .. my_pid())
  local t0 = loom.now()
  while loom.now() - t0 < 2 do burst(10) end
  local slow = loom.spawn(get, "/slow")
  loom.sleep(0.1)
  print("stopping (SIGTERM) with a slow request in flight")
  io.stdout:flush()
  os.execute("kill -TERM " .. my_pid())
  local got = slow:await()
  print(("%d requests answered, %d failed; the slow one: %s"):format(ok, failed, got or "lost"))
  local names = {}
  for who in pairs(by) do names[#names + 1] = who end
  table.sort(names)
  print("answered by: " .. table.concat(names, ", "))
end

loom.run(function()
  if demo and not loom.worker_id() then
    -- the supervisor opens the workers' sockets: find it a free port first
    local probe = assert(loom.tcp.listen("127.0.0.1", 0))
    port = select(2, probe:address())
    probe:close()
    loom.spawn(client, port)
  end
  -- in a worker the port is unused: it serves the socket its supervisor opened
  local ok, err = loom.http.serve("127.0.0.1", port or 0, handler, { workers = demo and 2 or "auto" })
  if not loom.worker_id() then
    print(ok and "all workers stopped cleanly" or ("stopped: " .. tostring(err)))
  end
end)
