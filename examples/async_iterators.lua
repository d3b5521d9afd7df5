-- Async iteration the Lua way: a for loop over an iterator whose steps may
-- block. An "async iterator" (a stream of numbers arriving over time) and an
-- "async generator" (pages fetched one by one, as needed, from a paginated
-- API), both written as plain iterator functions: their steps run in the
-- task that loops, so they may block.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

-- An async iterator: the next number when it arrives; nil ends the loop.
local function ticks(n, every)
  local i = 0
  return function()
    if i == n then return nil end
    loom.sleep(every * SCALE)
    i = i + 1
    return i, i * i
  end
end

-- An async generator: pages of a paginated API, fetched lazily, one request
-- per step of the loop. Its state (the next page) lives in the closure; a
-- step blocks inside the task that runs the loop. (Not coroutine.wrap: a
-- coroutine that is not a task cannot block; to produce from another task,
-- use a queue and q:items().)
local function pages(total_items, per_page)
  local first = 1
  return function()
    if first > total_items then return nil end
    loom.sleep(0.2 * SCALE) -- the request for this page, made only when the loop asks
    local page = {}
    for id = first, math.min(first + per_page - 1, total_items) do page[#page + 1] = "item" .. id end
    local number = (first - 1) // per_page + 1
    first = first + per_page
    return page, number
  end
end

loom.run(function()
  local t0 = loom.now()
  for i, square in ticks(4, 0.1) do
    print(string.format("%5.2fs  number %d, its square %d", loom.now() - t0, i, square))
  end
  local seen = 0
  for page, number in pages(10, 4) do
    seen = seen + #page
    print(string.format("%5.2fs  page %d: %s", loom.now() - t0, number, table.concat(page, " ")))
  end
  print(string.format("%5.2fs  %d items in all", loom.now() - t0, seen))
end)
