-- Runs a command and handles its output line by line as it comes, with
-- timings: the lines arrive while the command is still running.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

loom.run(function()
  local t0 = loom.now()
  local p = assert(loom.process.spawn{
    "sh", "-c", ("for i in 1 2 3 4; do echo \"step $i\"; sleep %g; done"):format(0.5 * SCALE),
    stdout = "pipe",
  })
  local out <close> = p.stdout
  for line in out:lines() do
    print(string.format("%5.2fs  %s", loom.now() - t0, line))
  end
  print(string.format("%5.2fs  exit code %d", loom.now() - t0, p:wait()))
end)
