local loom = require "loom"
local helper = require "helper"
local run = helper.run

describe("loom.lock", function()
  it("serialises critical sections and serves waiters first come first served", function()
    local log = {}
    run(function()
      local lock = loom.lock()
      local ts = {}
      for i = 1, 4 do
        ts[i] = loom.spawn(function()
          local _ <close> = lock:acquire()
          log[#log + 1] = "in" .. i
          loom.sleep(0.005)
          log[#log + 1] = "out" .. i
        end)
      end
      for i = 1, 4 do ts[i]:await() end
      assert.is_false(lock:locked())
    end)
    assert.are.same({ "in1", "out1", "in2", "out2", "in3", "out3", "in4", "out4" }, log)
  end)

  it("does not let a releasing task barge ahead of a queued waiter", function()
    local log = {}
    run(function()
      local lock = loom.lock()
      local g = lock:acquire()
      local waiter = loom.spawn(function()
        local _ <close> = lock:acquire()
        log[#log + 1] = "waiter"
      end)
      loom.sleep(0) -- the waiter queues
      g:release()
      local _ <close> = lock:acquire() -- must wait for the waiter's turn
      log[#log + 1] = "main"
      waiter:await()
    end)
    assert.are.same({ "waiter", "main" }, log)
  end)

  it("a cancelled acquire leaks nothing, before or after the hand-off", function()
    run(function()
      local lock = loom.lock()
      local g = lock:acquire()
      local a = loom.spawn(function() return lock:acquire() end)
      local b = loom.spawn(function() local _ <close> = lock:acquire(); return "b" end)
      loom.sleep(0)
      g:release() -- hands the lock to a, which has not run yet
      a:cancel()  -- a gives it on to b
      assert.has_error(function() a:await() end)
      assert.are.equal("b", b:await())
      assert.is_false(lock:locked())
      -- cancelled while still waiting
      local g2 = lock:acquire()
      local c = loom.spawn(function() return lock:acquire() end)
      loom.sleep(0)
      c:cancel()
      pcall(c.await, c)
      g2:release()
      assert.is_false(lock:locked())
    end)
  end)

  it("raises on misuse", function()
    run(function()
      local lock = loom.lock()
      assert.has_error(function() lock:release() end, "release: the lock is not held")
      local g = lock:acquire()
      assert.has_error(function() lock:acquire() end,
        "acquire: this task already holds the lock (locks are not re-entrant)")
      assert.is_true(lock:owned())
      local other = loom.spawn(function() lock:release() end)
      local ok, err = pcall(other.await, other)
      assert.is_false(ok)
      assert.matches("held by another task", err)
      g:release()
      g:release() -- a guard released twice is harmless
      assert.is_false(lock:locked())
      assert.has_error(function() lock.acquire(nil) end)
    end)
    assert.has_error(function() loom.lock():acquire() end, "loom.Lock:acquire: not inside a task (wrap the program in loom.run)")
  end)

  it("keeps a guard harmless after a direct release", function()
    run(function()
      local lock = loom.lock()
      do
        local g <close> = lock:acquire()
        lock:release()
        local h = loom.spawn(function() local _ <close> = lock:acquire(); loom.sleep(0.01) end)
        loom.sleep(0)
        assert.is_true(lock:locked()) -- h holds it; closing g must not release h's lock
        h:await()
      end
      assert.is_false(lock:locked())
    end)
  end)
end)

describe("loom.semaphore", function()
  it("limits concurrency to n", function()
    local active, peak = 0, 0
    helper.vrun(function()
      local sem = loom.semaphore(3)
      local ts = {}
      for i = 1, 9 do
        ts[i] = loom.spawn(function()
          local _ <close> = sem:acquire()
          active = active + 1
          peak = math.max(peak, active)
          loom.sleep(0.05)
          active = active - 1
        end)
      end
      for i = 1, 9 do ts[i]:await() end
      assert.are.equal(3, sem:value())
      assert.is_true(helper.near(loom.now(), 0.15), loom.now()) -- three rounds of three
    end)
    assert.are.equal(3, peak)
  end)

  it("a cancelled acquire leaks no permit", function()
    run(function()
      local sem = loom.semaphore(1)
      local g = sem:acquire()
      local ts = {}
      for i = 1, 3 do ts[i] = loom.spawn(function() return sem:acquire() end) end
      loom.sleep(0)
      ts[2]:cancel()
      g:release()   -- to ts[1]
      ts[1]:cancel() -- handed but cancelled: passes to ts[3]
      local g3 = ts[3]:await()
      assert.are.equal(0, sem:value())
      g3:release()
      assert.are.equal(1, sem:value())
    end)
  end)

  it("bounded semaphores refuse over-release", function()
    run(function()
      local sem = loom.semaphore(2, { bounded = true })
      assert.has_error(function() sem:release() end, "release: semaphore released too many times (bounded at 2)")
      local free = loom.semaphore(0)
      free:release()
      assert.are.equal(1, free:value())
    end)
    assert.has_error(function() loom.semaphore(-1) end,
      "bad argument #1 to 'semaphore' (the number of permits must not be negative)")
    assert.has_error(function() loom.semaphore("x") end)
  end)
end)

describe("loom.event", function()
  it("releases every waiter at once", function()
    helper.vrun(function()
      local ev = loom.event()
      local t0 = loom.now()
      local ts = {}
      for i = 1, 3 do ts[i] = loom.spawn(function() assert(ev:wait()); return loom.now() - t0 end) end
      loom.sleep(0.02)
      assert.is_false(ev:is_set())
      ev:set()
      for i = 1, 3 do
        local dt = ts[i]:await()
        assert.is_true(helper.near(dt, 0.02), dt)
      end
      assert.is_true(ev:wait()) -- already set: returns at once
      ev:clear()
      assert.is_false(ev:is_set())
    end)
  end)

  it("wait takes a timeout", function()
    run(function()
      local ev = loom.event()
      local t0 = loom.now()
      assert.are.same({ false, "timeout" }, { ev:wait(0.03) })
      assert.is_true(loom.now() - t0 >= 0.03)
      loom.spawn(function() loom.sleep(0.01); ev:set() end)
      assert.are.same({ true }, { ev:wait(1) })
      assert.has_error(function() ev:wait(-1) end)
    end)
  end)
end)

describe("loom.condition", function()
  it("wait releases the lock and notify wakes waiters in order", function()
    local log = {}
    run(function()
      local cond = loom.condition()
      local ready = 0
      local ts = {}
      for i = 1, 3 do
        ts[i] = loom.spawn(function()
          local _ <close> = cond:acquire()
          ready = ready + 1
          cond:wait()
          assert(cond.lock:owned())
          log[#log + 1] = i
        end)
      end
      loom.sleep(0.01)
      assert.are.equal(3, ready)
      do
        local _ <close> = cond:acquire()
        cond:notify()
      end
      loom.sleep(0.01)
      assert.are.same({ 1 }, log)
      do
        local _ <close> = cond:acquire()
        cond:notify_all()
      end
      for i = 1, 3 do ts[i]:await() end
      assert.is_false(cond:locked())
    end)
    assert.are.same({ 1, 2, 3 }, log)
  end)

  it("wait_for waits for a predicate", function()
    run(function()
      local cond = loom.condition(loom.lock())
      local items = {}
      local consumer = loom.spawn(function()
        local _ <close> = cond:acquire()
        return cond:wait_for(function() return #items >= 2 and #items end)
      end)
      for i = 1, 2 do
        loom.sleep(0.005)
        local _ <close> = cond:acquire()
        items[#items + 1] = i
        cond:notify_all()
      end
      assert.are.equal(2, consumer:await())
    end)
  end)

  it("re-acquires the lock when cancelled, and passes a notification on", function()
    run(function()
      local cond = loom.condition()
      local a = loom.spawn(function()
        local _ <close> = cond:acquire()
        cond:wait()
      end)
      local b = loom.spawn(function()
        local _ <close> = cond:acquire()
        cond:wait()
        return "b notified"
      end)
      loom.sleep(0.01)
      do
        local _ <close> = cond:acquire()
        cond:notify(1) -- to a ...
        a:cancel()     -- ... which is cancelled: b gets it
      end
      local ok, err = pcall(a.await, a)
      assert.is_false(ok)
      assert.is_true(loom.is_cancelled(err))
      assert.are.equal("b notified", b:await())
      assert.is_false(cond:locked())
    end)
  end)

  it("refuses misuse", function()
    run(function()
      local cond = loom.condition()
      assert.has_error(function() cond:wait() end, "wait: the condition's lock is not held by this task")
      assert.has_error(function() cond:notify() end, "notify: the condition's lock is not held by this task")
    end)
    assert.has_error(function() loom.condition(5) end, "bad argument #1 to 'condition' (loom.Lock expected, got number)")
  end)
end)
