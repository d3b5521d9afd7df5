-- loom.wait runs tasks to the end and hands back those done and those still
-- pending; the errors are then inspected one by one (no task's failure stops
-- the others). Like asyncio.wait followed by task.exception().
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

local function job(name, seconds, fail)
  return function()
    loom.sleep(seconds * SCALE)
    if fail then error(name .. ": " .. fail, 0) end
    return name .. " ok"
  end
end

loom.run(function()
  local t0 = loom.now()
  local tasks = {}
  for i, spec in ipairs {
    { "resize", 0.3 }, { "upload", 0.5, "connection reset" }, { "thumbnail", 0.2 },
    { "notify", 0.4, "mail server refused" }, { "slow-report", 5 } } do
    tasks[i] = loom.spawn(job(spec[1], spec[2], spec[3]))
    tasks[i].name = spec[1]
  end
  local done, pending = loom.wait(tasks, { timeout = 1 * SCALE })
  print(string.format("%5.2fs  %d done, %d still pending", loom.now() - t0, #done, #pending))
  for _, t in ipairs(tasks) do
    if t:done() then
      local err = t:error()
      if err then -- a string error carries the task's traceback after its first line
        print(string.format("        %-12s failed: %s", t.name, tostring(err):match("^[^\n]*")))
      else
        print(string.format("        %-12s %s", t.name, t:result()))
      end
    end
  end
  for _, t in ipairs(pending) do
    print(string.format("        %-12s still running: cancelled", t.name))
    t:cancel()
  end
end)
