-- Three waiters block on one event; a starter sets it after a while and all
-- three are released at the same moment.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

loom.run(function()
  local t0 = loom.now()
  local go = loom.event()
  local function waiter(name)
    print(string.format("%5.2fs  %s waits", loom.now() - t0, name))
    go:wait()
    print(string.format("%5.2fs  %s released", loom.now() - t0, name))
  end
  local tasks = {}
  for _, name in ipairs({ "runner A", "runner B", "runner C" }) do tasks[#tasks + 1] = loom.spawn(waiter, name) end
  loom.sleep(1.0 * SCALE)
  print(string.format("%5.2fs  starter sets the event", loom.now() - t0))
  go:set()
  for _, t in ipairs(tasks) do t:await() end
end)
