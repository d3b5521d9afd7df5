-- loom's WebSocket echo server, for bench/ws.sh. usage: lua5.4 bench/ws_echo.lua PORT
local loom = require "loom"
loom.run(function()
  assert(loom.http.serve("127.0.0.1", tonumber(arg[1]), function(req)
    local ws = loom.websocket.upgrade(req)
    if not ws then return end
    for msg, kind in ws:messages() do ws:send(msg, kind) end
  end, { backlog = 1024 }))
  loom.sleep(1e9)
end)
