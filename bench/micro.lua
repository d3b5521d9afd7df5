-- Scheduler microbenchmarks on loom, the same work as ../shared/bench/micro_*.
-- usage: lua5.4 bench/micro.lua spawn|pingpong|semaphore|gather|timeout|sleepers
local loom = require "loom"
local N_SPAWN, N_PING, N_SLEEP = 100000, 200000, 100000
local N_SEM, N_SEM_TASKS = 100000, 10000
local N_GATHER, N_TIMEOUT = 100000, 100000
local benches = {}

-- 100,000 tasks that return at once, all awaited.
function benches.spawn()
  local function one() return 1 end
  local ts = {}
  for i = 1, N_SPAWN do ts[i] = loom.spawn(one) end
  local sum = 0
  for i = 1, N_SPAWN do sum = sum + ts[i]:await() end
  assert(sum == N_SPAWN)
end

-- 200,000 round trips between two tasks over two queues of size 1.
function benches.pingpong()
  local a, b = loom.queue(1), loom.queue(1)
  local ponger = loom.spawn(function()
    for _ = 1, N_PING do b:put(a:get()) end
  end)
  for i = 1, N_PING do
    a:put(i)
    assert(b:get() == i)
  end
  ponger:await()
end

-- 10,000 tasks each entering a semaphore-guarded section 10 times,
-- uncontended (enough permits): the cost of an acquire/release pair.
function benches.semaphore()
  local sem = loom.semaphore(N_SEM_TASKS)
  local entered = 0
  local function worker()
    for _ = 1, N_SEM / N_SEM_TASKS do
      local _ <close> = sem:acquire()
      entered = entered + 1
    end
  end
  local ts = {}
  for i = 1, N_SEM_TASKS do ts[i] = loom.spawn(worker) end
  for i = 1, N_SEM_TASKS do ts[i]:await() end
  assert(entered == N_SEM)
end

-- gather over 100,000 functions that return at once, end to end.
function benches.gather()
  local function one() return 1 end
  local fns = {}
  for i = 1, N_GATHER do fns[i] = one end
  local results = { loom.gather(table.unpack(fns, 1, N_GATHER)) }
  assert(#results == N_GATHER and results[N_GATHER] == 1)
end

-- 100,000 loom.timeout calls around an operation that finishes in time.
function benches.timeout()
  local function op() return 1 end
  local total = 0
  for _ = 1, N_TIMEOUT do
    local _, v = loom.timeout(10, op)
    total = total + v
  end
  assert(total == N_TIMEOUT)
end

-- 100,000 tasks sleeping a random 0-1 s.
function benches.sleepers()
  math.randomseed(1)
  local function sleeper(d) loom.sleep(d) end
  local ts = {}
  for i = 1, N_SLEEP do ts[i] = loom.spawn(sleeper, math.random()) end
  for i = 1, N_SLEEP do ts[i]:await() end
end

local which = arg[1]
local n = ({ spawn = N_SPAWN, pingpong = N_PING, sleepers = N_SLEEP, semaphore = N_SEM,
  gather = N_GATHER, timeout = N_TIMEOUT })[which]
assert(n, "usage: micro.lua spawn|pingpong|semaphore|gather|timeout|sleepers")
local t0 = loom.now()
loom.run(benches[which])
local el = loom.now() - t0
print(string.format("%s n=%d seconds=%.3f per_op_us=%.2f", which, n, el, el / n * 1e6))
