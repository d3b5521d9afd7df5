-- loom.retry and loom.rate_limit, timed on the virtual clock (exact).
local loom = require "loom"
local helper = require "helper"
local vrun, near = helper.vrun, helper.near

describe("loom.retry", function()
  it("retries raised errors and nil, msg, code with exponential back-off, then succeeds", function()
    vrun(function()
      local calls, at = 0, {}
      local v = loom.retry(function()
        calls = calls + 1
        at[calls] = loom.now()
        if calls == 1 then error("flaky") end
        if calls == 2 then return nil, "refused", "ECONNREFUSED" end
        return "ok", nil, 3
      end, { attempts = 4, backoff = 0.1, jitter = false })
      assert.are.equal("ok", v)
      assert.are.equal(3, calls)
      assert.is_true(near(at[2] - at[1], 0.1))
      assert.is_true(near(at[3] - at[2], 0.2))
      assert.are.same({ "ok", nil, 3 }, { loom.retry(function() return "ok", nil, 3 end) })
    end)
  end)

  it("gives the last failure back as it came: the same error value, or nil, msg, code", function()
    vrun(function()
      local e = { reason = "down" }
      local calls = 0
      local ok, got = pcall(loom.retry, function() calls = calls + 1; error(e) end, { attempts = 3 })
      assert.is_false(ok)
      assert.are.equal(e, got) -- the same table
      assert.are.equal(3, calls)
      assert.are.same({ nil, "timeout", "ETIMEDOUT" },
        { loom.retry(function() return nil, "timeout", "ETIMEDOUT" end, { attempts = 2 }) })
    end)
  end)

  it("caps the delay at max_backoff and keeps jitter within the upper half", function()
    vrun(function()
      local at = {}
      pcall(loom.retry, function() at[#at + 1] = loom.now(); error("x") end,
        { attempts = 6, backoff = 1, max_backoff = 3 })
      assert.are.equal(6, #at)
      local bounds = { 1, 2, 3, 3, 3 }
      for k = 1, 5 do
        local d = at[k + 1] - at[k]
        assert.is_true(d >= bounds[k] / 2 - 1e-9 and d <= bounds[k] + 1e-9, ("delay %d: %g"):format(k, d))
      end
    end)
  end)

  it("stops at a failure retry_on refuses, and never retries a cancellation", function()
    vrun(function()
      local calls = 0
      local r = table.pack(loom.retry(function()
        calls = calls + 1
        return nil, "not found", 404
      end, { retry_on = function(_, code) return code ~= 404 end }))
      assert.are.same({ n = 3, nil, "not found", 404 }, r)
      assert.are.equal(1, calls)
      calls = 0
      local t = loom.spawn(loom.retry, function() calls = calls + 1; loom.sleep(10) end, { attempts = 5 })
      loom.sleep(1)
      t:cancel()
      assert.is_true(loom.is_cancelled(select(2, pcall(t.await, t))))
      assert.are.equal(1, calls)
    end)
  end)

  it("checks its arguments", function()
    assert.has_error(function() loom.retry(nil) end, "bad argument #1 to 'retry' (function expected, got nil)")
    assert.has_error(function() loom.retry(print, { attempts = 0 }) end,
      "bad argument #2 to 'retry' (attempts must be an integer >= 1)")
    assert.has_error(function() loom.retry(print, { retry_on = 1 }) end,
      "bad argument #2 to 'retry' (retry_on must be a function)")
  end)
end)

describe("loom.rate_limit", function()
  it("lets a burst through, then paces acquires at the rate, first come first served", function()
    vrun(function()
      local limiter = loom.rate_limit(10, 3)
      local order, at = {}, {}
      local tasks = {}
      for i = 1, 6 do
        tasks[i] = loom.spawn(function()
          limiter:acquire()
          order[#order + 1] = i
          at[i] = loom.now()
        end)
      end
      for _, t in ipairs(tasks) do t:await() end
      assert.are.same({ 1, 2, 3, 4, 5, 6 }, order)
      for i = 1, 3 do assert.is_true(near(at[i], 0)) end
      for i = 4, 6 do assert.is_true(near(at[i], (i - 3) * 0.1), ("task %d at %g"):format(i, at[i])) end
    end)
  end)

  it("a cancelled waiter takes nothing and holds nobody up", function()
    vrun(function()
      local limiter = loom.rate_limit(1, 1)
      limiter:acquire() -- empty now
      local first = loom.spawn(limiter.acquire, limiter)
      local second = loom.spawn(function() limiter:acquire(); return loom.now() end)
      loom.sleep(0.5)
      first:cancel()
      assert.is_true(near(second:await(), 1))
      assert.has_error(function() limiter:acquire(2) end, "bad argument #1 to 'acquire' (2 tokens asked of a bucket of 1)")
      assert.has_error(function() loom.rate_limit(0) end,
        "bad argument #1 to 'rate_limit' (rate must be a positive number of tokens per second)")
    end)
  end)
end)
