-- Results handled in the order they finish: fastest first.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

loom.run(function()
  local t0 = loom.now()
  local tasks = {}
  for _, job in ipairs({ { "slow", 0.9 }, { "fast", 0.3 }, { "medium", 0.6 } }) do
    tasks[#tasks + 1] = loom.spawn(function()
      loom.sleep(job[2] * SCALE)
      return job[1]
    end)
  end
  for t in loom.as_completed(tasks) do
    print(string.format("%5.2fs  %s finished", loom.now() - t0, t:result()))
  end
end)
