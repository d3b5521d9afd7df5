-- Following a live feed over WebSockets: a server pushes a price every
-- 100 ms to whoever subscribes; the client reads the updates as they come,
-- keeps a running average, gives up on a feed that goes quiet for a second
-- (loom.timeout around each receive) and ends when the server closes.
-- Run: lua5.4 examples/ws_feed.lua
local loom = require "loom"

local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1
local TICK = 0.1 * SCALE

loom.run(function()
  local server = assert(loom.http.serve("127.0.0.1", 0, function(req)
    local ws = loom.websocket.upgrade(req)
    if not ws then return end
    local price = 100.0
    for i = 1, 10 do
      price = price + (i % 3 - 1) * 0.5
      if not ws:send(('{"seq": %d, "price": %.2f}'):format(i, price)) then return end
      loom.sleep(TICK)
    end
    ws:close(1000, "market closed")
  end))
  local _, port = server:address()

  local ws <close> = assert(loom.websocket.connect(("ws://127.0.0.1:%d/prices"):format(port)))
  local t0, sum, n = loom.now(), 0, 0
  while true do
    local ok, msg, kind, code, reason = loom.timeout(10 * TICK, ws.receive, ws)
    if not ok then print("the feed went quiet: giving up") break end
    if not msg then print(("%5.2fs  feed closed: %d %s"):format(loom.now() - t0, code, reason)) break end
    local seq, price = msg:match('"seq": (%d+), "price": ([%d.]+)')
    n, sum = n + 1, sum + tonumber(price)
    print(("%5.2fs  #%s  %s  average %.2f"):format(loom.now() - t0, seq, price, sum / n))
  end
  server:close()
end)
