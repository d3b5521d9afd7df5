local loom = require "loom"
local helper = require "helper"
local run = helper.run

describe("loom.sleep", function()
  it("runs concurrent sleeps together", function()
    helper.vrun(function()
      local ts = {}
      for i = 1, 3 do ts[i] = loom.spawn(loom.sleep, 0.2) end
      for i = 1, 3 do ts[i]:await() end
      assert.is_true(helper.near(loom.now(), 0.2), loom.now())
    end)
  end)

  it("never ends early", function()
    run(function()
      for _, d in ipairs({ 0.001, 0.0105, 0.03 }) do
        local t0 = loom.now()
        loom.sleep(d)
        assert.is_true(loom.now() - t0 >= d)
      end
    end)
  end)

  it("wakes sleepers in deadline order", function()
    local log = {}
    run(function()
      local ts = {}
      for _, d in ipairs({ 0.03, 0.01, 0.02 }) do
        ts[#ts + 1] = loom.spawn(function() loom.sleep(d); log[#log + 1] = d end)
      end
      for _, t in ipairs(ts) do t:await() end
    end)
    assert.are.same({ 0.01, 0.02, 0.03 }, log)
  end)

  it("sleep(0) lets every other ready task run first", function()
    local log = {}
    run(function()
      for i = 1, 3 do loom.spawn(function() log[#log + 1] = i end) end
      loom.sleep(0)
      log[#log + 1] = "main"
    end)
    assert.are.same({ 1, 2, 3, "main" }, log)
  end)

  it("timers are not starved by a task that yields with sleep(0) between long steps", function()
    run(function()
      local stop, worst = false, 0
      loom.spawn(function()
        local t_end = loom.now() + 0.3
        while loom.now() < t_end do
          local t = loom.now()
          while loom.now() - t < 0.001 do end -- a 1 ms step: checking the clock every 64 steps would show ~64 ms
          loom.sleep(0)
        end
        stop = true
      end)
      while not stop do
        local t = loom.now()
        loom.sleep(0.001)
        worst = math.max(worst, loom.now() - t - 0.001)
      end
      assert.is_true(worst < helper.upper(0, 0.025), worst)
    end)
  end)

  it("sleep(math.huge) waits until cancelled", function()
    run(function()
      local t = loom.spawn(loom.sleep, math.huge)
      loom.sleep(0.01)
      assert.is_false(t:done())
      t:cancel()
      assert.has_error(function() t:await() end)
    end)
  end)

  it("refuses bad durations clearly", function()
    run(function()
      assert.has_error(function() loom.sleep(-1) end,
        "bad argument #1 to 'sleep' (duration must be a non-negative number, got -1)")
      assert.has_error(function() loom.sleep(0 / 0) end,
        "bad argument #1 to 'sleep' (duration must be a non-negative number, got nan)")
      assert.has_error(function() loom.sleep("soon") end, "bad argument #1 to 'sleep' (number expected, got string)")
      assert.has_error(function() loom.sleep() end, "bad argument #1 to 'sleep' (number expected, got no value)")
    end)
  end)

  it("outside a task raises the documented message", function()
    assert.has_error(function() loom.sleep(1) end, "loom.sleep: not inside a task (wrap the program in loom.run)")
  end)

  it("inside a plain coroutine or a non-yieldable call raises clearly", function()
    run(function()
      local co = coroutine.create(function() loom.sleep(0.01) end)
      local ok, err = coroutine.resume(co)
      assert.is_false(ok)
      assert.matches("cannot block inside a coroutine that is not a loom task", err, 1, true)
      local okc, errc = pcall(table.sort, { 3, 2, 1 }, function(a, b) loom.sleep(0); return a < b end)
      assert.is_false(okc)
      assert.matches("cannot block here", errc, 1, true)
    end)
  end)
end)

describe("loom.now", function()
  it("is a monotonic clock in seconds", function()
    local a = loom.now()
    local b = loom.now()
    assert.are.equal("number", math.type(a) == "float" and "number" or "integer")
    assert.is_true(b >= a)
    run(function() loom.sleep(0.02) end)
    assert.is_true(loom.now() - a >= 0.02)
  end)
end)

describe("the loop's one timer", function()
  -- libuv's timer counts whole milliseconds of its own clock and can fire
  -- just before loom's earliest deadline; it must be armed again then, or
  -- the next poll waits for I/O alone (with a listener open: for ever).
  it("keeps firing through thousands of sub-millisecond sleeps and timeouts with a listener open", function()
    run(function()
      local srv = assert(loom.tcp.listen("127.0.0.1", 0))
      local t0 = loom.now()
      for _ = 1, 2000 do loom.sleep(0.0005) end
      for _ = 1, 1000 do assert.is_false((loom.timeout(0.0001, loom.sleep, 0.001))) end
      for _ = 1, 500 do loom.sleep(0.001) end
      -- every sleep lasted at least what it asked
      assert.is_true(loom.now() - t0 >= 2000 * 0.0005 + 1000 * 0.0001 + 500 * 0.001)
      srv:close()
    end, 30)
  end)
end)
