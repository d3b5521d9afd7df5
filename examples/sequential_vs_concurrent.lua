-- Three fetches of 2 seconds each: one after the other they take 6 s; as
-- three tasks they overlap and take 2 s. The code of a fetch is the same.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

local function fetch(name)
  loom.sleep(2 * SCALE) -- stands for a 2-second network round trip
  return name .. " data"
end

loom.run(function()
  local names = { "users", "posts", "tags" }

  local t0 = loom.now()
  for _, name in ipairs(names) do fetch(name) end
  print(string.format("%5.2fs  sequential: three fetches one after the other", loom.now() - t0))

  t0 = loom.now()
  local tasks = {}
  for i, name in ipairs(names) do tasks[i] = loom.spawn(fetch, name) end
  for _, t in ipairs(tasks) do t:await() end
  print(string.format("%5.2fs  concurrent: three tasks awaited together", loom.now() - t0))
end)
