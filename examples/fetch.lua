-- Three HTTP fetches of 2 seconds each, run concurrently: together they take
-- about 2 seconds, not 6. A local HTTP server (loom.http.serve) stands in for
-- a slow API; each fetch is a task making a real request with loom.http.get.
-- Run: bash tools/demo.sh   (or: lua5.4 examples/fetch.lua with loom installed)
local loom = require "loom"

local DELAY = 2.0 * (tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1)

loom.run(function()
  local server = assert(loom.http.serve("127.0.0.1", 0, function(req)
    loom.sleep(DELAY) -- the API takes its time; the server goes on serving others
    return 200, { ["Content-Type"] = "application/json" },
      ('{"resource": "%s", "items": [%s]}'):format(req.path, ("1,"):rep(20) .. "1")
  end))
  local _, port = server:address()
  local base = ("http://127.0.0.1:%d"):format(port)

  local t0 = loom.now()
  local function fetch(path)
    print(string.format("%5.2fs  start  GET %s", loom.now() - t0, path))
    local res = assert(loom.http.get(base .. path, { timeout = 3 * DELAY + 1 }))
    print(string.format("%5.2fs  done   GET %s -> %d, %d bytes", loom.now() - t0, path, res.status, #res.body))
    return #res.body
  end

  local paths = { "/users", "/posts", "/tags" }
  local tasks = {}
  for i, path in ipairs(paths) do tasks[i] = loom.spawn(fetch, path) end
  local total = 0
  for _, t in ipairs(tasks) do total = total + t:await() end
  print(string.format("%5.2fs  all %d fetches done, %d bytes (one after the other: %.1fs)",
    loom.now() - t0, #paths, total, DELAY * #paths))
  loom.http.close_idle()
  server:close()
end)
