-- Debug mode catching the classic mistake: a blocking call (os.execute with
-- the shell's sleep) made directly inside a task. Every other task stops for
-- its duration; with {debug = true} (or LOOM_DEBUG=1) loom says so on
-- stderr, naming the task and the lines around the call. The fix is in
-- blocking_offload.lua: run it with loom.thread.run.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

loom.run({ debug = true, slow_step = 0.05 * SCALE + 0.02 }, function()
  local t0 = loom.now()
  local ticker = loom.spawn(function()
    for i = 1, 6 do
      loom.sleep(0.1 * SCALE)
      print(string.format("%5.2fs  tick %d", loom.now() - t0, i))
    end
  end)
  ticker.name = "ticker"
  local worker = loom.spawn(function()
    loom.sleep(0.15 * SCALE)
    os.execute(("sleep %.3f"):format(0.3 * SCALE + 0.1)) -- blocks the whole loop
    loom.sleep(0.01)
  end)
  worker.name = "worker"
  loom.gather(ticker, worker)
  print(string.format("%5.2fs  done: the ticks around the blocking call came late", loom.now() - t0))
end)
