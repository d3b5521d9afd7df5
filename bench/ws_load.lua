-- The load for bench/ws.sh: CONNS websocket clients, each sending a SIZE-byte
-- binary message and waiting for its echo, for SECONDS; prints msgs_per_s.
-- usage: lua5.4 bench/ws_load.lua URL CONNS SIZE SECONDS
local loom = require "loom"
local url, conns, size, secs = arg[1], tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4])
loom.run(function()
  local msg = ("m"):rep(size)
  local count, errors, stop = 0, 0, false
  local g = loom.group()
  for _ = 1, conns do
    g:spawn(function()
      local ws, err = loom.websocket.connect(url)
      if not ws then errors = errors + 1; io.stderr:write(tostring(err), "\n") return end
      while not stop do
        if not ws:send(msg, "binary") or not ws:receive() then errors = errors + 1 break end
        count = count + 1
      end
      ws:close()
    end)
  end
  loom.sleep(0.5) -- connected and warm
  local c0, t0 = count, loom.now()
  loom.sleep(secs)
  local n, dt = count - c0, loom.now() - t0
  stop = true
  g:close()
  print(("msgs_per_s=%d errors=%d"):format(math.floor(n / dt), errors))
end)
