-- Ten 1-second fetches, at most three at a time: a semaphore admits three,
-- the others queue in order. Four rounds: about 4 seconds, not 1 or 10.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

loom.run(function()
  local t0 = loom.now()
  local limit = loom.semaphore(3)
  local function fetch(i)
    local permit <close> = limit:acquire()
    print(string.format("%5.2fs  start fetch %2d", loom.now() - t0, i))
    loom.sleep(1.0 * SCALE)
    print(string.format("%5.2fs  end   fetch %2d", loom.now() - t0, i))
  end
  local tasks = {}
  for i = 1, 10 do tasks[i] = loom.spawn(fetch, i) end
  for _, t in ipairs(tasks) do t:await() end
  print(string.format("%5.2fs  all 10 done, 3 at a time", loom.now() - t0))
end)
