local loom = require "loom"
local helper = require "helper"
local run = helper.run

describe("tasks", function()
  it("are scheduled, not run inline, and start in spawn order", function()
    local log = {}
    run(function()
      for i = 1, 3 do loom.spawn(function() log[#log + 1] = i end) end
      log[#log + 1] = "main"
      loom.sleep(0)
    end)
    assert.are.same({ "main", 1, 2, 3 }, log)
  end)

  it("await returns every result, nils included", function()
    run(function()
      local none = loom.spawn(function() end)
      local one = loom.spawn(function() return "x" end)
      local many = loom.spawn(function(a, b) return a, nil, b end, 1, 2)
      assert.are.equal(0, select("#", none:await()))
      assert.are.equal("x", one:await())
      assert.are.same({ n = 3, 1, nil, 2 }, table.pack(many:await()))
      assert.are.same({ n = 3, 1, nil, 2 }, table.pack(many:await())) -- again, when done
    end)
  end)

  it("passes up to many arguments, nils included", function()
    run(function()
      local args = {}
      for i = 1, 100 do args[i] = i end
      args[50] = nil
      local t = loom.spawn(function(...) return select("#", ...), (select(50, ...)), (select(100, ...)) end,
        table.unpack(args, 1, 100))
      assert.are.same({ 100, nil, 100 }, { t:await() })
    end)
  end)

  it("wakes every awaiter of a task", function()
    run(function()
      local t = loom.spawn(function() loom.sleep(0.01); return 7 end)
      local a = loom.spawn(function() return t:await() + 1 end)
      local b = loom.spawn(function() return t:await() + 2 end)
      assert.are.equal(8, a:await())
      assert.are.equal(9, b:await())
    end)
  end)

  it("await raises the task's error as the same value", function()
    run(function()
      local e = { code = 1 }
      local t = loom.spawn(function() error(e) end)
      local ok, err = pcall(t.await, t)
      assert.is_false(ok)
      assert.are.equal(e, err)
      local s = loom.spawn(function() error("not found", 0) end)
      ok, err = pcall(s.await, s)
      assert.are.equal("not found", err) -- no traceback glued on
      assert.matches("^not found\nstack traceback of task 'task%-%d+':", s:traceback())
    end)
  end)

  it("passes a string error unchanged through several awaits, the traceback kept beside it", function()
    run(function()
      local inner = loom.spawn(function() error("deep", 0) end)
      local outer = loom.spawn(function() return inner:await() end)
      local _, err = pcall(outer.await, outer)
      assert.are.equal("deep", err)
      assert.matches("stack traceback of task", inner:traceback(), 1, true)
      assert.matches("stack traceback of task", outer:traceback(), 1, true)
    end)
  end)

  it("refuses to await itself", function()
    run(function()
      local me = loom.current()
      assert.has_error(function() me:await() end, "await: a task cannot await itself")
    end)
  end)

  it("result() and error() are non-blocking views of the outcome", function()
    run(function()
      local ok = loom.spawn(function() loom.sleep(0.01); return 1, 2 end)
      assert.has_error(function() ok:result() end, "result: task is not done (use await to wait for it)")
      assert.is_false(ok:done())
      ok:await()
      assert.are.same({ 1, 2 }, { ok:result() })
      assert.is_nil(ok:error())
      local e = {}
      local bad = loom.spawn(function() error(e) end)
      loom.sleep(0)
      assert.is_true(bad:done())
      assert.is_false(bad:cancelled())
      assert.are.equal(e, bad:error())
      local okr, err = pcall(bad.result, bad)
      assert.is_false(okr)
      assert.are.equal(e, err)
    end)
  end)

  it("have a settable name, 'main' for the main task, task-N by default", function()
    run(function()
      assert.are.equal("main", loom.current().name)
      local t = loom.spawn(function() end)
      assert.matches("^task%-%d+$", t.name)
      t.name = "worker"
      assert.are.equal("worker", t.name)
      assert.are.equal("loom.Task 'worker' (new)", tostring(t))
      t:await()
      assert.are.equal("loom.Task 'worker' (done)", tostring(t))
      assert.has_error(function() t.name = 5 end)
      assert.has_error(function() t.other = 1 end, "cannot set field 'other' of a task (only 'name')")
    end)
  end)

  it("checks their arguments", function()
    run(function()
      assert.has_error(function() loom.spawn(nil) end, "bad argument #1 to 'spawn' (function expected, got nil)")
      local t = loom.spawn(function() end)
      assert.has_error(function() t.await(nil) end)
      assert.has_error(function() t.cancel({}) end)
      assert.has_error(function() t.result(5) end)
    end)
    assert.has_error(function() loom.spawn(print) end, "loom.spawn: not inside a task (wrap the program in loom.run)")
  end)

  it("loom.current is the running task, nil outside", function()
    assert.is_nil(loom.current())
    run(function()
      local inner
      local t = loom.spawn(function() inner = loom.current() end)
      t:await()
      assert.are.equal(t, inner)
    end)
  end)

  it("spawn nested tasks that spawn tasks", function()
    local function tree(depth)
      if depth == 0 then loom.sleep(0.001); return 1 end
      local a = loom.spawn(tree, depth - 1)
      local b = loom.spawn(tree, depth - 1)
      return a:await() + b:await()
    end
    assert.are.equal(2 ^ 8, run(tree, 5, 8))
  end)

  it("run 100,000 concurrent tasks and reuse coroutines", function()
    local n = 100000
    local done = 0
    local t0 = loom.now()
    run(function()
      local ts = {}
      for i = 1, n do
        ts[i] = loom.spawn(function() loom.sleep(0.01); done = done + 1 end)
      end
      for i = 1, n do ts[i]:await() end
      -- a second wave starts on recycled coroutines
      local seen = {}
      for i = 1, 1000 do
        ts[i] = loom.spawn(function() seen[coroutine.running()] = true end)
      end
      for i = 1, 1000 do ts[i]:await() end
      local distinct = 0
      for _ in pairs(seen) do distinct = distinct + 1 end
      assert.are.equal(1, distinct)
    end, 30)
    assert.are.equal(n, done)
    assert.is_true(loom.now() - t0 < 10)
  end)

  it("a plain coroutine.yield() inside a task lets the others run", function()
    local log = {}
    run(function()
      local t = loom.spawn(function() log[#log + 1] = "other" end)
      coroutine.yield()
      log[#log + 1] = "main"
      t:await()
    end)
    assert.are.same({ "other", "main" }, log)
  end)

  it("ignore a stray coroutine.resume while waiting", function()
    run(function()
      local co
      local t0 = loom.now()
      local t = loom.spawn(function()
        co = coroutine.running()
        loom.sleep(0.05)
        return loom.now() - t0
      end)
      loom.sleep(0.01)
      assert.are.same({ true }, { coroutine.resume(co, "junk", 1) })
      assert.is_false(t:done())
      assert.is_true(t:await() >= 0.05)
    end)
  end)

  it("survive a user closing a task's coroutine from outside", function()
    run(function()
      local co
      local t = loom.spawn(function()
        co = coroutine.running()
        loom.timeout(5, loom.sleep, 0.02)
      end)
      loom.sleep(0.01)
      assert.is_true(coroutine.close(co))
      local ok, err = pcall(t.await, t)
      assert.is_false(ok)
      assert.matches("closed from outside", err)
      -- woken with values already pushed, then closed
      local q = loom.queue()
      local t2 = loom.spawn(function() co = coroutine.running(); return q:get() end)
      loom.sleep(0)
      q:put("item")
      coroutine.close(co)
      assert.has_error(function() t2:await() end)
    end)
  end)

  it("ignore a stray resume after the wake-up, keeping its values", function()
    run(function()
      local co
      local t = loom.spawn(function()
        co = coroutine.running()
        local a = loom.spawn(function() return "a", "b" end)
        return a:await()
      end)
      loom.sleep(0) -- t awaits a; a ends and wakes t, which is now ready
      assert.is_true(coroutine.resume(co, "junk"))
      assert.are.same({ "a", "b" }, { t:await() })
    end)
  end)
end)

describe("cancellation", function()
  it("raises at the blocking call, unwinding through pcall and <close>", function()
    local log = {}
    run(function()
      local t = loom.spawn(function()
        local _ <close> = setmetatable({}, { __close = function(_, e)
          log[#log + 1] = loom.is_cancelled(e) and "close:cancelled" or "close:?"
        end })
        local ok, err = pcall(loom.sleep, 10)
        log[#log + 1] = ok and "woke" or tostring(err)
        error(err)
      end)
      loom.sleep(0.01)
      assert.is_true(t:cancel("stop"))
      local ok, err = pcall(t.await, t)
      assert.is_false(ok)
      assert.is_true(loom.is_cancelled(err))
      assert.are.equal("stop", err.reason)
      assert.is_true(t:cancelled())
      assert.is_true(t:done())
      assert.are.equal(err, t:error())
    end)
    assert.are.same({ "cancelled: stop", "close:cancelled" }, log)
  end)

  it("lets cleanup block in a <close> handler", function()
    run(function()
      local cleaned
      local t = loom.spawn(function()
        local _ <close> = setmetatable({}, { __close = function()
          loom.sleep(0.03)
          cleaned = loom.now()
        end })
        loom.sleep(10)
      end)
      loom.sleep(0.01)
      local t0 = loom.now()
      t:cancel()
      pcall(t.await, t)
      assert.is_true(cleaned - t0 >= 0.03)
    end)
  end)

  it("is delivered exactly once", function()
    run(function()
      local t = loom.spawn(function()
        local ok = pcall(loom.sleep, 10)
        assert(not ok)
        loom.sleep(0.01) -- not cancelled again
        return "recovered"
      end)
      loom.sleep(0.01)
      t:cancel()
      t:cancel() -- a second request while the first is under way changes nothing
      assert.are.equal("recovered", t:await())
      assert.is_false(t:cancelled())
    end)
  end)

  it("of a task that never started means it never runs", function()
    run(function()
      local ran = false
      local t = loom.spawn(function() ran = true end)
      assert.is_true(t:cancel())
      assert.has_error(function() t:await() end)
      assert.is_false(ran)
      assert.is_true(t:cancelled())
    end)
  end)

  it("of a task that never blocks: it has already ended", function()
    run(function()
      local t = loom.spawn(function()
        local s = 0
        for i = 1, 1e5 do s = s + i end
        return s
      end)
      loom.sleep(0)
      assert.is_true(t:done())
      assert.is_false(t:cancel())
      assert.are.equal(5000050000, t:result())
    end)
  end)

  it("requested by a running task for itself raises at its next blocking call", function()
    run(function()
      local reached = false
      local t = loom.spawn(function()
        loom.current():cancel("self")
        reached = true
        loom.sleep(0)
        reached = "after"
      end)
      local ok, err = pcall(t.await, t)
      assert.is_false(ok)
      assert.are.equal("self", err.reason)
      assert.is_true(reached)
    end)
  end)

  it("replaces a wake-up that has not been delivered yet", function()
    run(function()
      local t = loom.spawn(function() loom.sleep(0); return "woke" end)
      loom.sleep(0) -- t runs and requeues itself behind main
      t:cancel()
      assert.has_error(function() t:await() end)
      assert.is_true(t:cancelled())
    end)
  end)

  it("interrupts an await without touching the awaited task", function()
    run(function()
      local slow = loom.spawn(function() loom.sleep(0.05); return "slow" end)
      local waiter = loom.spawn(function() return slow:await() end)
      loom.sleep(0.01)
      waiter:cancel()
      assert.is_true(pcall(function() return waiter:await() end) == false)
      assert.are.equal("slow", slow:await())
    end)
  end)

  it("cancel returns false for an ended task", function()
    run(function()
      local t = loom.spawn(function() end)
      t:await()
      assert.is_false(t:cancel())
    end)
  end)

  it("is_cancelled is false for other values", function()
    for _, v in ipairs({ "cancelled", {}, 1, true }) do assert.is_false(loom.is_cancelled(v)) end
    assert.is_false(loom.is_cancelled())
  end)
end)
