-- A task started in the background (a heartbeat) goes on while the main
-- work proceeds; when the work is done the background task is cancelled and
-- its cleanup runs. Like asyncio.create_task without awaiting it at once.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

loom.run(function()
  local t0 = loom.now()
  local function log(fmt, ...) print(string.format("%5.2fs  " .. fmt, loom.now() - t0, ...)) end

  local beats = 0
  local heartbeat = loom.spawn(function()
    local _ <close> = setmetatable({}, { __close = function() log("heartbeat stopped after %d beats", beats) end })
    while true do
      loom.sleep(0.5 * SCALE)
      beats = beats + 1
      log("heartbeat %d", beats)
    end
  end)

  for step = 1, 3 do
    loom.sleep(0.7 * SCALE) -- the main work, in steps
    log("main work step %d done", step)
  end
  heartbeat:cancel()
  pcall(heartbeat.await, heartbeat) -- let its cleanup run; it ends cancelled
  log("done; the heartbeat ended %s", heartbeat:status())
end)
