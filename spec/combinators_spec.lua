local loom = require "loom"
local helper = require "helper"
local run = helper.run

local function sleeper(d, v) return function() loom.sleep(d); return v, "extra" end end

describe("loom.gather", function()
  it("returns first results in argument order, whatever the finish order, concurrently", function()
    helper.vrun(function()
      local t = loom.spawn(sleeper(0.05, "task"))
      assert.are.same({ "slow", "fast", "task" }, { loom.gather(sleeper(0.2, "slow"), sleeper(0.1, "fast"), t) })
      assert.is_true(helper.near(loom.now(), 0.2), loom.now()) -- together: the slowest's time
    end)
  end)

  it("returns nothing for no arguments and keeps nil results in place", function()
    run(function()
      assert.are.equal(0, select("#", loom.gather()))
      assert.are.same({ n = 3, 1, nil, 3 }, table.pack(loom.gather(function() return 1 end, function() end,
        function() return 3 end)))
    end)
  end)

  it("on a failure cancels the others, waits for their cleanup, then raises the same error", function()
    local log = {}
    run(function()
      local e = { code = 7 }
      local ok, err = pcall(loom.gather,
        function()
          local _ <close> = setmetatable({}, { __close = function()
            loom.sleep(0.02) -- blocking cleanup is waited for
            log[#log + 1] = "cleaned"
          end })
          loom.sleep(10)
        end,
        function() loom.sleep(0.01); error(e) end)
      log[#log + 1] = "raised"
      assert.is_false(ok)
      assert.are.equal(e, err)
    end)
    assert.are.same({ "cleaned", "raised" }, log)
  end)

  it("cancelled inside gather cancels its children and leaves no orphan", function()
    run(function()
      local children = {}
      local g = loom.spawn(function()
        children[1] = loom.spawn(loom.sleep, 10)
        children[2] = loom.spawn(loom.sleep, 10)
        return loom.gather(children[1], children[2], function() loom.sleep(10) end)
      end)
      loom.sleep(0.01)
      g:cancel()
      local ok, err = pcall(g.await, g)
      assert.is_false(ok)
      assert.is_true(loom.is_cancelled(err))
      for _, c in ipairs(children) do assert.is_true(c:cancelled()) end
    end)
  end)

  it("checks its arguments before spawning anything", function()
    run(function()
      local ran = false
      assert.has_error(function() loom.gather(function() ran = true end, 42) end,
        "bad argument #2 to 'gather' (function or task expected, got number)")
      loom.sleep(0)
      assert.is_false(ran)
    end)
    assert.has_error(function() loom.gather(print) end, "loom.gather: not inside a task (wrap the program in loom.run)")
  end)
end)

describe("loom.all_settled", function()
  it("never raises and keeps argument order", function()
    run(function()
      local e = {}
      local r = loom.all_settled(sleeper(0.03, "a"), function() loom.sleep(0.01); error(e) end, sleeper(0.02, "c"))
      assert.are.same({ ok = true, value = "a" }, r[1])
      assert.is_false(r[2].ok)
      assert.are.equal(e, r[2].error)
      assert.are.same({ ok = true, value = "c" }, r[3])
    end)
  end)
end)

describe("loom.race", function()
  it("returns the first to finish and cancels the rest", function()
    run(function()
      local slow = loom.spawn(sleeper(1, "slow"))
      local t0 = loom.now()
      assert.are.same({ "fast", "extra" }, { loom.race(slow, sleeper(0.02, "fast")) })
      assert.is_true(loom.now() - t0 < helper.upper(0, 0.2))
      assert.is_true(slow:cancelled())
    end)
  end)

  it("raises the error of the first to finish", function()
    run(function()
      local ok, err = pcall(loom.race, sleeper(1, "slow"), function() loom.sleep(0.01); error("boom", 0) end)
      assert.is_false(ok)
      assert.matches("^boom", err)
    end)
  end)
end)

describe("loom.wait", function()
  it("returns done and pending without cancelling anything", function()
    run(function()
      local a, b, c = loom.spawn(sleeper(0.01)), loom.spawn(sleeper(0.05)), loom.spawn(sleeper(0.5))
      local done, pending = loom.wait({ a, b, c }, { timeout = 0.1 })
      assert.are.same({ a, b }, done)
      assert.are.same({ c }, pending)
      assert.is_false(c:done())
      c:cancel()
    end)
  end)

  it("return_when first and first_error", function()
    run(function()
      local a, b = loom.spawn(sleeper(0.05)), loom.spawn(sleeper(0.01))
      local done, pending = loom.wait({ a, b }, { return_when = "first" })
      assert.are.same({ b }, done)
      assert.are.same({ a }, pending)
      local ok1 = loom.spawn(sleeper(0.01))
      local bad = loom.spawn(function() loom.sleep(0.02); error("bad", 0) end)
      local later = loom.spawn(sleeper(0.3))
      done, pending = loom.wait({ ok1, bad, later }, { return_when = "first_error" })
      assert.are.same({ ok1, bad }, done)
      assert.are.same({ later }, pending)
      assert.matches("^bad", bad:error())
      done = loom.wait({ a, later })
      assert.are.equal(2, #done)
    end)
  end)

  it("checks its arguments", function()
    run(function()
      assert.has_error(function() loom.wait(5) end, "bad argument #1 to 'wait' (table expected, got number)")
      assert.has_error(function() loom.wait({}, { return_when = "any" }) end)
      assert.has_error(function() loom.wait({}, { timeout = -1 }) end)
      assert.has_error(function() loom.wait({ 1 }) end, "bad argument #1 to 'wait' (function or task expected, got number)")
    end)
  end)
end)

describe("loom.as_completed", function()
  it("yields tasks fastest first", function()
    run(function()
      local order = {}
      local ts = { loom.spawn(sleeper(0.03, "c")), loom.spawn(sleeper(0.01, "a")), loom.spawn(sleeper(0.02, "b")) }
      for t in loom.as_completed(ts) do order[#order + 1] = t:result() end
      assert.are.same({ "a", "b", "c" }, order)
    end)
  end)

  it("raises when its overall timeout runs out", function()
    run(function()
      local ts = { loom.spawn(sleeper(0.01, "a")), loom.spawn(sleeper(1, "b")) }
      local got = {}
      local ok, err = pcall(function()
        for t in loom.as_completed(ts, 0.05) do got[#got + 1] = t:result() end
      end)
      assert.is_false(ok)
      assert.matches("as_completed: timeout %(1 of 2 tasks pending%)", err)
      assert.are.same({ "a" }, got)
      ts[2]:cancel()
    end)
  end)
end)

describe("loom.timeout", function()
  it("returns true and the results when the work finishes in time", function()
    run(function()
      assert.are.same({ true, "v", "extra" }, { loom.timeout(1, sleeper(0.01, "v")) })
      assert.are.same({ n = 3, true, nil, 2 }, table.pack(loom.timeout(1, function(a, b) return a, b end, nil, 2)))
    end)
  end)

  it("cancels the work on expiry, waits for its cleanup, then returns false, 'timeout'", function()
    local log = {}
    helper.vrun(function()
      local t0 = loom.now()
      local ok, why = loom.timeout(0.05, function()
        local _ <close> = setmetatable({}, { __close = function()
          loom.sleep(0.02)
          log[#log + 1] = "closed"
        end })
        local okp, err = pcall(loom.sleep, 10)
        log[#log + 1] = loom.is_cancelled(err) and "pcall saw cancel" or tostring(okp)
        error(err)
      end)
      log[#log + 1] = "returned"
      assert.are.same({ false, "timeout" }, { ok, why })
      local dt = loom.now() - t0
      assert.is_true(helper.near(dt, 0.07), dt) -- the 0.05 deadline, then the 0.02 cleanup
      loom.sleep(0.01) -- the task is not cancelled afterwards
    end)
    assert.are.same({ "pcall saw cancel", "closed", "returned" }, log)
  end)

  it("lets errors of the work pass through", function()
    run(function()
      local e = {}
      local ok, err = pcall(loom.timeout, 1, function() error(e) end)
      assert.is_false(ok)
      assert.are.equal(e, err)
    end)
  end)

  it("nests: the nearest deadline wins and an outer expiry is not taken for an inner one", function()
    run(function()
      local inner
      local ok, why = loom.timeout(0.05, function()
        inner = table.pack(loom.timeout(1, function() loom.sleep(10) end))
        return "outer body went on"
      end)
      assert.are.same({ false, "timeout" }, { ok, why })
      assert.is_nil(inner) -- the inner timeout did not claim the outer expiry
      local r = table.pack(loom.timeout(1, function()
        local a, b = loom.timeout(0.02, function() loom.sleep(10) end)
        return a, b, "outer continues"
      end))
      assert.are.same({ n = 4, true, false, "timeout", "outer continues" }, r)
    end)
  end)

  it("keeps the results of a body whose last wait completed as the deadline passed", function()
    run(function()
      local r
      local body = loom.spawn(function()
        r = table.pack(loom.timeout(0.02, function()
          loom.sleep(0.015) -- ends before the deadline, but both pass while the loop is held
          return "finished"
        end))
      end)
      loom.sleep(0)
      local t0 = loom.now()
      while loom.now() - t0 < 0.05 do end -- hold the loop: both deadlines pass together
      body:await()
      assert.are.same({ n = 2, true, "finished" }, r)
      loom.sleep(0) -- and the withdrawn cancellation does not strike later
    end)
  end)

  it("does not swallow a cancellation requested while its own was in flight", function()
    run(function()
      local t = loom.spawn(function() return loom.timeout(0.02, loom.sleep, 10) end)
      loom.sleep(0) -- t opens its scope and sleeps
      loom.spawn(function() -- holds the loop until both deadlines below have passed
        local t0 = loom.now()
        while loom.now() - t0 < 0.04 do end
      end)
      loom.sleep(0.015)     -- woken just before t's scope fires, in the same pass
      t:cancel("external")  -- the scope's cancellation is queued, not yet delivered
      local ok, err = pcall(t.await, t)
      assert.is_false(ok)
      assert.is_true(loom.is_cancelled(err))
      assert.are.equal("external", err.reason)
    end)
  end)

  it("checks its arguments", function()
    run(function()
      assert.has_error(function() loom.timeout(-1, print) end,
        "bad argument #1 to 'timeout' (duration must be a non-negative number, got -1)")
      assert.has_error(function() loom.timeout(1, 5) end, "bad argument #2 to 'timeout' (function expected, got number)")
    end)
    assert.has_error(function() loom.timeout(1, print) end, "loom.timeout: not inside a task (wrap the program in loom.run)")
  end)
end)

describe("loom.shield", function()
  it("finishes the shielded work when the caller is cancelled, then raises the cancellation", function()
    run(function()
      local finished_at
      local t0 = loom.now()
      local caller = loom.spawn(function()
        return loom.shield(function()
          loom.sleep(0.05)
          finished_at = loom.now() - t0
          return "saved"
        end)
      end)
      loom.sleep(0.01)
      caller:cancel()
      local ok, err = pcall(caller.await, caller)
      assert.is_false(ok)
      assert.is_true(loom.is_cancelled(err))
      assert.is_true(finished_at >= 0.05)
      assert.is_true(loom.now() - t0 >= 0.05)
      assert.are.equal("saved", loom.shield(function() return "saved" end))
    end)
  end)
end)

describe("error values", function()
  it("pass through await, gather, all_settled, race, shield, groups and timeout unchanged", function()
    run(function()
      local function fails() loom.sleep(0.001); error("not found", 0) end
      local function fails_here() loom.sleep(0.001); error("with position") end
      local t = { code = 7 }
      local function fails_table() loom.sleep(0.001); error(t) end
      local checks = {
        function(f) return loom.spawn(f):await() end,
        function(f) return loom.gather(f, function() loom.sleep(1) end) end,
        function(f) local r = loom.all_settled(f); error(r[1].error, 0) end,
        function(f) return loom.race(f, function() loom.sleep(1) end) end,
        function(f) return loom.shield(f) end,
        function(f) return loom.group(function(g) g:spawn(f) end) end,
        function(f) return loom.timeout(5, f) end,
      }
      for i, check in ipairs(checks) do
        local ok, err = pcall(check, fails)
        assert.is_false(ok)
        assert.are.equal("not found", err, "check " .. i)
        ok, err = pcall(check, fails_table)
        assert.are.equal(t, err, "check " .. i)
        ok, err = pcall(check, fails_here)
        assert.matches("^spec/combinators_spec.lua:%d+: with position$", err)
      end
    end)
  end)

  it("gain the traceback only at loom.run's outermost re-raise", function()
    local ok, err = pcall(loom.run, function() error("top", 0) end)
    assert.is_false(ok)
    assert.matches("^top\nstack traceback of task 'main':", err)
    local t = {}
    ok, err = pcall(loom.run, function() error(t) end)
    assert.are.equal(t, err)
  end)

  it("a cancellation without a reason prints as 'cancelled'", function()
    run(function()
      local t = loom.spawn(loom.sleep, 1)
      loom.sleep(0)
      t:cancel()
      local _, err = pcall(t.await, t)
      assert.is_true(loom.is_cancelled(err))
      assert.is_nil(rawget(err, "reason"))
      assert.are.equal("cancelled", tostring(err))
    end)
  end)
end)
