-- Two producers and three consumers over a queue of size 5. Producers block
-- while the queue is full (backpressure); join() waits until every item has
-- been processed; then the queue is closed and the consumers end.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

loom.run(function()
  local t0 = loom.now()
  local q = loom.queue(5)
  local function stamp() return string.format("%5.2fs", loom.now() - t0) end

  local function producer(name, n)
    for i = 1, n do
      q:put(name .. i)
      print(stamp(), name .. " put " .. name .. i .. "  (queue size " .. q:size() .. ")")
      loom.sleep(0.05 * SCALE)
    end
  end

  local function consumer(name)
    local handled = 0
    for item in q:items() do -- ends when the queue is closed and drained
      loom.sleep(0.2 * SCALE) -- processing is slower than producing
      handled = handled + 1
      print(stamp(), name .. " handled " .. item)
      q:task_done()
    end
    return handled
  end

  local consumers = {}
  for i = 1, 3 do consumers[i] = loom.spawn(consumer, "consumer" .. i) end
  local producers = { loom.spawn(producer, "p", 6), loom.spawn(producer, "q", 6) }
  for _, p in ipairs(producers) do p:await() end
  q:join()
  print(stamp(), "all 12 items handled; closing the queue")
  q:close()
  local total = 0
  for _, c in ipairs(consumers) do total = total + c:await() end
  print(stamp(), "consumers stopped after " .. total .. " items")
end)
