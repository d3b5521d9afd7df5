-- A server that shuts down gracefully on Ctrl-C (SIGINT) or SIGTERM: it
-- stops accepting, lets the requests in flight finish, then exits.
-- usage: lua5.4 examples/graceful_shutdown.lua [port]   (then press Ctrl-C)
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

loom.run(function()
  local in_flight, served = 0, 0
  local idle = loom.event()
  idle:set()
  local server = assert(loom.tcp.serve("127.0.0.1", tonumber(arg[1]) or 0, function(s)
    local request = s:read_line()
    if not request then return end
    in_flight = in_flight + 1
    idle:clear()
    loom.sleep(1.0 * SCALE) -- a slow request
    s:write("done: ", request, "\n")
    served = served + 1
    in_flight = in_flight - 1
    if in_flight == 0 then idle:set() end
  end))
  local host, port = server:address()
  print(("listening on %s:%d"):format(host, port))
  io.stdout:flush()
  local sig = loom.signal.wait("SIGINT", "SIGTERM")
  print(("%s: no new connections; finishing %d request(s) in flight"):format(sig, in_flight))
  io.stdout:flush()
  server:close()
  idle:wait()
  print(("shut down after serving %d request(s)"):format(served))
end)
