-- loom's echo server for ../shared/bench/echoload.c (and, given a
-- certificate and key, over TLS for bench/tls_echoload.c): a task per
-- connection, reading whatever arrived and writing it back.
-- usage: lua5.4 bench/echo.lua PORT [CERT KEY]
local loom = require "loom"
local port = assert(tonumber(arg[1]), "usage: echo.lua PORT [CERT KEY]")
local tls = arg[2] and { cert = arg[2], key = assert(arg[3], "usage: echo.lua PORT [CERT KEY]") }

loom.run(function()
  assert(loom.tcp.serve("127.0.0.1", port, function(s)
    while true do
      local data = s:read()
      if not data then return end
      s:write(data)
    end
  end, { tls = tls }))
  loom.sleep(math.huge)
end)
