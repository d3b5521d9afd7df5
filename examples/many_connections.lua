-- A client opening 1,000 connections to a local server, at most 50 at a
-- time (a semaphore), each sending a request and reading the answer.
local loom = require "loom"

local N, LIMIT = 1000, 50

loom.run(function()
  local active, peak = 0, 0
  local server = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
    local n = s:read_line()
    if n then s:write("answer ", n, "\n") end
  end))
  local _, port = server:address()
  local t0 = loom.now()
  local limit = loom.semaphore(LIMIT)
  local ok = 0
  loom.group(function(g)
    for i = 1, N do
      g:spawn(function()
        local _ <close> = limit:acquire()
        active = active + 1
        peak = math.max(peak, active)
        local c <close> = assert(loom.tcp.connect("127.0.0.1", port))
        c:write(tostring(i), "\n")
        if c:read_line() == "answer " .. i then ok = ok + 1 end
        active = active - 1
      end)
    end
  end)
  print(string.format("%d of %d requests answered, at most %d connections at once, in %.2fs",
    ok, N, peak, loom.now() - t0))
  server:close()
end)
