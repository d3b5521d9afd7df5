-- loom's echo server for ../shared/bench/echoload.c: a task per connection,
-- reading whatever arrived and writing it back. usage: lua5.4 bench/echo.lua PORT
local loom = require "loom"
local port = assert(tonumber(arg[1]), "usage: echo.lua PORT")

loom.run(function()
  assert(loom.tcp.serve("127.0.0.1", port, function(s)
    while true do
      local data = s:read()
      if not data then return end
      s:write(data)
    end
  end))
  loom.sleep(math.huge)
end)
