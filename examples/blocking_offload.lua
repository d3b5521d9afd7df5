-- Blocking code run off the loop: a call that blocks its thread (here the
-- shell's `sleep`, standing for a blocking C library or a slow system call)
-- runs on a worker thread with loom.thread.run, so the ticker keeps ticking.
-- The same call made directly in a task would stop every task for its
-- whole duration (see debug_blocking.lua).
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

local function blocking_job(seconds) -- runs on a worker thread: no upvalues
  os.execute(("sleep %.3f"):format(seconds))
  return ("slept %.2f s on a worker thread"):format(seconds)
end

loom.run(function()
  local t0 = loom.now()
  local done, ticks = false, 0
  local ticker = loom.spawn(function()
    while not done do
      loom.sleep(0.1 * SCALE)
      ticks = ticks + 1
      print(string.format("%5.2fs  tick %d", loom.now() - t0, ticks))
    end
  end)
  local result = loom.thread.run(blocking_job, 1 * SCALE)
  done = true
  ticker:await()
  print(string.format("%5.2fs  %s; %d ticks meanwhile", loom.now() - t0, result, ticks))
end)
