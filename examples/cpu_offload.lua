-- A CPU-heavy computation (counting primes) offloaded to worker threads with
-- loom.thread.run, while a ticker task keeps printing: the loop is never
-- blocked. Two computations run in parallel on two cores.
local loom = require "loom"
local LIMIT = math.floor(400000 * (tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1))

-- Runs on a worker thread: no upvalues, plain values in and out.
local function count_primes(from, to)
  local count = 0
  for n = math.max(from, 2), to do
    local prime = true
    for d = 2, math.floor(math.sqrt(n)) do
      if n % d == 0 then prime = false; break end
    end
    if prime then count = count + 1 end
  end
  return count
end

loom.run(function()
  local t0 = loom.now()
  local done, ticks = false, 0
  local ticker = loom.spawn(function()
    while not done do
      loom.sleep(0.05)
      ticks = ticks + 1
      print(string.format("%5.2fs  tick %d (the loop is free)", loom.now() - t0, ticks))
    end
  end)
  local half = LIMIT // 2
  local a, b = loom.gather(
    function() return loom.thread.run(count_primes, 1, half) end,
    function() return loom.thread.run(count_primes, half + 1, LIMIT) end)
  done = true
  ticker:await()
  print(string.format("%5.2fs  %d primes below %d, counted on two threads; %d ticks meanwhile",
    loom.now() - t0, a + b, LIMIT, ticks))
end)
