-- A long-running worker is cancelled; its cleanup (a <close> handler that
-- takes time, e.g. flushing a file) runs before the cancellation completes.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

loom.run(function()
  local t0 = loom.now()
  local function stamp() return string.format("%5.2fs ", loom.now() - t0) end
  local worker = loom.spawn(function()
    local log <close> = setmetatable({}, { __close = function(_, err)
      print(stamp(), "worker cleaning up after: " .. tostring(err))
      loom.sleep(0.2 * SCALE) -- cleanup may block
      print(stamp(), "worker cleanup done")
    end })
    for step = 1, 100 do
      print(stamp(), "worker step " .. step)
      loom.sleep(0.3 * SCALE)
    end
  end)
  loom.sleep(1.0 * SCALE)
  print(stamp(), "main cancels the worker")
  worker:cancel("shutting down")
  local ok, err = pcall(worker.await, worker)
  print(stamp(), string.format("worker ended: cancelled=%s (%s)", tostring(worker:cancelled()), tostring(err)))
  assert(not ok and loom.is_cancelled(err))
end)
