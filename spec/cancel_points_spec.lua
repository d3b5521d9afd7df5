-- Every blocking call is a cancellation point, delivered exactly once, and
-- leaves its primitive usable.
local loom = require "loom"
local helper = require "helper"
local run = helper.run

-- name -> function(setup) returning a blocking call and a check of the primitive afterwards
local points = {
  sleep = function() return function() loom.sleep(10) end end,
  await = function()
    local other = loom.spawn(loom.sleep, 10)
    return function() other:await() end, function() assert(not other:done()); other:cancel() end
  end,
  lock_acquire = function()
    local lock = loom.lock()
    local g = lock:acquire()
    return function() lock:acquire() end, function() g:release(); assert(not lock:locked()) end
  end,
  semaphore_acquire = function()
    local sem = loom.semaphore(0)
    return function() sem:acquire() end, function() sem:release(); assert(sem:value() == 1) end
  end,
  event_wait = function()
    local ev = loom.event()
    return function() ev:wait() end
  end,
  condition_wait = function()
    local cond = loom.condition()
    return function()
      local _ <close> = cond:acquire()
      cond:wait()
    end, function() assert(not cond:locked()) end
  end,
  queue_get = function()
    local q = loom.queue()
    return function() q:get() end, function() q:put_nowait(1); assert(q:size() == 1) end
  end,
  queue_put = function()
    local q = loom.queue(1)
    q:put_nowait("a")
    return function() q:put("b") end, function() assert(q:size() == 1 and q:get_nowait() == "a") end
  end,
  queue_join = function()
    local q = loom.queue()
    q:put_nowait(1)
    return function() q:join() end
  end,
  gather = function() return function() loom.gather(function() loom.sleep(10) end) end end,
  race = function() return function() loom.race(function() loom.sleep(10) end) end end,
  wait = function()
    local t = loom.spawn(loom.sleep, 10)
    return function() loom.wait({ t }) end, function() t:cancel() end
  end,
  timeout = function() return function() loom.timeout(10, loom.sleep, 10) end end,
  shield = function() return function() loom.shield(loom.sleep, 0.01) end end,
  group = function() return function() loom.group(function(g) g:spawn(loom.sleep, 10) end) end end,
}

describe("cancellation points", function()
  for name, setup in pairs(points) do
    it(name .. " raises the cancellation once and leaves its primitive usable", function()
      run(function()
        local call, check = setup()
        local raised = 0
        local t = loom.spawn(function()
          local ok, err = pcall(call)
          assert(not ok and loom.is_cancelled(err), tostring(err))
          raised = raised + 1
          loom.sleep(0.001) -- not raised again
          return "after"
        end)
        loom.sleep(0.005)
        assert.is_true(t:cancel("stop"))
        assert.are.equal("after", t:await())
        assert.are.equal(1, raised)
        if check then check() end
      end)
    end)
  end
end)
