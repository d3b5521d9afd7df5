-- Three "fetches" of 2 seconds each, run concurrently: together they take
-- about 2 seconds, not 6. Each fetch is a task; main awaits them in order.
-- Run: bash tools/demo.sh   (or: lua5.4 examples/fetch.lua with loom installed)
local loom = require "loom"

local DELAY = 2.0 * (tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1)

local function fetch(url, t0)
  print(string.format("%5.2fs  start  %s", loom.now() - t0, url))
  loom.sleep(DELAY) -- stands for the network round trip
  print(string.format("%5.2fs  done   %s", loom.now() - t0, url))
  return #url * 100 -- "bytes received"
end

loom.run(function()
  local t0 = loom.now()
  local urls = { "https://example.com/users", "https://example.com/posts", "https://example.com/tags" }
  local tasks = {}
  for i, url in ipairs(urls) do tasks[i] = loom.spawn(fetch, url, t0) end
  local total = 0
  for _, t in ipairs(tasks) do total = total + t:await() end
  print(string.format("%5.2fs  all %d fetches done, %d bytes (sequentially: %.0fs)",
    loom.now() - t0, #urls, total, DELAY * #urls))
end)
