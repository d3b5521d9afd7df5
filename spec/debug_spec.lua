local loom = require "loom"
local helper = require "helper"
local run = helper.run

describe("debug mode", function()
  it("catches a blocking call inside a task with a slow-step warning naming it", function()
    local out, status = helper.lua([[
      local loom = require "loom"
      loom.run({ debug = true }, function()
        local ticker = loom.spawn(function() for _ = 1, 5 do loom.sleep(0.05) end end)
        ticker.name = "ticker"
        local blocker = loom.spawn(function()
          loom.sleep(0.01)
          os.execute("sleep 0.25") -- the classic mistake
          loom.sleep(0.01)
        end)
        blocker.name = "blocker"
        blocker:await()
        ticker:await()
      end)
    ]])
    assert.are.equal(0, status, out)
    local ms = tonumber(out:match("slow step: task 'blocker' held the loop for (%d+) ms"))
    assert(ms and ms >= 240 and ms < 1000, out)
    assert.matches("resumed at [^\n]-:6, ran to [^\n]-:8; spawned at [^\n]-:5%)", out)
    assert.not_matches("task 'ticker' held", out)
    assert.not_matches("task 'main' held", out)
  end)

  it("is off by default, on with LOOM_DEBUG=1, and its limit is configurable", function()
    -- the step is timed by the wall clock, so it spins by that clock: at
    -- least SPIN seconds (a lower bound a busy machine cannot shorten)
    local script = [[
      local loom = require "loom"
      loom.run(OPTS function()
        local t0 = loom.now()
        while loom.now() - t0 < SPIN do end
      end)
    ]]
    local function variant(opts, spin) return (script:gsub("OPTS", opts):gsub("SPIN", spin)) end
    assert.not_matches("slow step", helper.lua(variant("", "0.06")))
    assert.matches("slow step: task 'main' held the loop",
      helper.lua(variant("", "0.06"), { env = "LOOM_DEBUG=1 LOOM_DEBUG_SLOW=0.03" }))
    -- 10 ms against the default 0.1 s: only a stall of 90 ms could flip it
    assert.not_matches("slow step", helper.lua(variant("", "0.01"), { env = "LOOM_DEBUG=1" }))
    assert.matches("slow step: task 'main' held the loop",
      helper.lua(variant("{ debug = true, slow_step = 0.03 },", "0.06")))
  end)

  it("shows where a task was spawned in the report of its unretrieved error", function()
    local out = helper.lua([[
      local loom = require "loom"
      loom.run({ debug = true }, function()
        local t = loom.spawn(function() error("lost error") end)
        t.name = "worker"
        loom.sleep(0.01)
      end)
    ]])
    assert.matches("task 'worker' %(spawned at [^\n]-:3%) failed and nobody retrieved its error", out)
    assert.matches("lost error", out)
    assert.matches("stack traceback of task 'worker' %(spawned at [^\n]-:3%)", out)
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() loom.dump(42) end, "bad argument #1 to 'dump' (file expected, got number)")
    run(function()
      assert.has_error(function() loom.current():traceback({}) end,
        "bad argument #1 to 'traceback' (string expected, got table)")
    end)
  end)

  it("rejects a bad slow_step", function()
    assert.has_error(function() loom.run({ debug = true, slow_step = -1 }, function() end) end,
      "bad argument #1 to 'run' (slow_step must be a positive number of seconds)")
  end)
end)

describe("task introspection", function()
  it("lists live tasks and shows where a suspended task waits", function()
    run(function()
      local q = loom.queue()
      local waiter = loom.spawn(function()
        return q:get() -- waits here
      end)
      waiter.name = "waiter"
      local quick = loom.spawn(function() return 1 end)
      loom.sleep(0)
      local live, seen = loom.tasks(), {}
      for _, t in ipairs(live) do seen[t] = true end
      assert(seen[loom.current()] and seen[waiter] and not seen[quick])
      local before = #live
      local tb = waiter:traceback()
      assert.matches("in method 'get'", tb)
      assert.matches("debug_spec%.lua:%d+", tb)
      assert.matches("^here\n", waiter:traceback("here"))
      assert.are.equal("task 'task-" .. tostring(quick):match("task%-(%d+)") .. "' has ended (done)", quick:traceback())
      assert.matches("^stack traceback:\n\t[^\n]*debug_spec%.lua:%d+:", loom.current():traceback()) -- its own stack
      q:put("x")
      assert.are.equal("x", waiter:await())
      assert.are.equal(before - 1, #loom.tasks())
    end)
  end)

  it("dumps the task tree with states, locations and groups", function()
    run(function()
      local text
      loom.group(function(g)
        g:spawn(function() loom.sleep(0.05) end).name = "child"
        local orphan = loom.spawn(function()
          loom.spawn(function() loom.sleep(0.05) end).name = "grandchild"
          loom.sleep(0.05)
        end)
        orphan.name = "parent"
        loom.sleep(0.01)
        local sink = { write = function(_, s) text = s end }
        local returned = loom.dump(sink)
        assert.are.equal(text, returned)
      end)
      assert.matches("^loom: 4 live tasks\n", text)
      assert.matches("\nmain %[running%] at [^\n]*debug_spec%.lua:%d+\n", text)
      assert.matches("\n  child %[waiting%] in sleep at [^\n]*debug_spec%.lua:%d+ for %d+%.%d+ s in a group\n", text)
      assert.matches("\n  parent %[waiting%][^\n]*\n    grandchild %[waiting%]", text)
    end)
  end)
end)
