-- A connection pool shared by many tasks: 20 tasks make requests to a local
-- line server over at most 3 TCP connections. A queue holds the idle
-- connections; a task takes one (waiting while all are busy), uses it, and
-- gives it back through a <close> guard, also when it fails.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

local Pool = {}
Pool.__index = Pool

local function new_pool(host, port, size)
  local pool = setmetatable({ idle = loom.queue(), host = host, port = port, opened = 0, size = size }, Pool)
  return pool
end

-- A connection, and a guard that gives it back when closed.
function Pool:take()
  local conn = self.idle:get_nowait()
  if not conn and self.opened < self.size then
    self.opened = self.opened + 1
    conn = assert(loom.tcp.connect(self.host, self.port))
  end
  conn = conn or self.idle:get() -- all busy: wait for one
  return conn, setmetatable({}, { __close = function() self.idle:put(conn) end })
end

function Pool:close()
  for _ = 1, self.opened do self.idle:get():close() end
end

loom.run(function()
  local server = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
    for line in s:lines() do
      loom.sleep(0.1 * SCALE) -- the server takes its time
      s:write("echo ", line, "\n")
    end
  end))
  local _, port = server:address()
  local pool = new_pool("127.0.0.1", port, 3)
  local t0 = loom.now()
  local in_use, peak = 0, 0
  loom.group(function(g)
    for i = 1, 20 do
      g:spawn(function()
        local conn, _ <close> = pool:take()
        in_use = in_use + 1
        peak = math.max(peak, in_use)
        conn:write("request ", i, "\n")
        local reply = conn:read_line()
        in_use = in_use - 1
        print(string.format("%5.2fs  task %2d got '%s'", loom.now() - t0, i, reply))
      end)
    end
  end)
  print(string.format("%5.2fs  20 requests over %d connections (at most %d in use at once)",
    loom.now() - t0, pool.opened, peak))
  pool:close()
  server:close()
end)
