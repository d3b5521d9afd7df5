-- Three fetches of 1, 1.5 and 0.5 seconds gathered: the results come back in
-- argument order after about 1.5 s (the slowest), not 3 s.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

loom.run(function()
  local t0 = loom.now()
  local function fetch(name, seconds)
    return function()
      loom.sleep(seconds * SCALE)
      print(string.format("%5.2fs  %s arrived", loom.now() - t0, name))
      return name .. " data"
    end
  end
  local users, posts, tags = loom.gather(fetch("users", 1.0), fetch("posts", 1.5), fetch("tags", 0.5))
  print(string.format("%5.2fs  gathered: %s, %s, %s", loom.now() - t0, users, posts, tags))
end)
