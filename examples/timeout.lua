-- A slow operation is cut by loom.timeout; a fast one finishes in time.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

loom.run(function()
  local t0 = loom.now()
  local function operation(seconds)
    loom.sleep(seconds * SCALE)
    return "result after " .. seconds .. "s"
  end
  local ok, value = loom.timeout(1.0 * SCALE, operation, 0.5)
  print(string.format("%5.2fs  fast operation: ok=%s, %s", loom.now() - t0, tostring(ok), value))
  local t1 = loom.now()
  ok, value = loom.timeout(1.0 * SCALE, operation, 5)
  print(string.format("%5.2fs  slow operation: ok=%s, %s (cut after %.2fs)", loom.now() - t0, tostring(ok), value,
    loom.now() - t1))
end)
