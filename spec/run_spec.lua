local loom = require "loom"
local helper = require "helper"

describe("loom.run", function()
  it("returns the main task's results, nils included, and passes its arguments", function()
    local r = table.pack(loom.run(function(a, b) return b, nil, a end, 1, 2))
    assert.are.same({ n = 3, 2, nil, 1 }, r)
  end)

  it("returns nothing when main returns nothing", function()
    assert.are.equal(0, select("#", loom.run(function() end)))
  end)

  it("re-raises a string error with the main task's traceback", function()
    local ok, err = pcall(loom.run, function() error("broken") end)
    assert.is_false(ok)
    assert.matches("broken", err)
    assert.matches("stack traceback of task 'main'", err, 1, true)
  end)

  it("re-raises error values of every type as the same value", function()
    local tbl, ud, fn, co = {}, io.stdout, print, coroutine.create(print)
    for _, v in ipairs({ tbl, ud, fn, co, 42, 4.5, true, false }) do
      local ok, err = pcall(loom.run, function() error(v) end)
      assert.is_false(ok)
      assert.are.equal(v, err)
    end
    local ok, err = pcall(loom.run, function() error(nil) end)
    assert.is_false(ok)
    assert.is_nil(err)
  end)

  it("refuses a second loop inside a running one", function()
    helper.run(function()
      local ok, err = pcall(loom.run, function() end)
      assert.is_false(ok)
      assert.matches("a loop is already running", err)
    end)
  end)

  it("checks its argument", function()
    assert.has_error(function() loom.run(nil) end, "bad argument #1 to 'run' (function expected, got nil)")
    assert.has_error(function() loom.run("x") end, "bad argument #1 to 'run' (function expected, got string)")
  end)

  it("cancels and awaits leftover tasks when main ends, running their cleanup", function()
    local log = {}
    local t0 = loom.now()
    local leftover
    loom.run(function()
      leftover = loom.spawn(function()
        local _ <close> = setmetatable({}, { __close = function()
          loom.sleep(0.05) -- cleanup may block
          log[#log + 1] = "closed"
        end })
        loom.sleep(10)
        log[#log + 1] = "not reached"
      end)
      loom.sleep(0.01)
    end)
    assert.are.same({ "closed" }, log)
    assert.is_true(leftover:cancelled())
    assert.is_true(loom.now() - t0 < 1)
    assert.is_true(loom.now() - t0 >= 0.05)
  end)

  it("keeps running leftover tasks that catch the cancellation until they end", function()
    local finished = false
    loom.run(function()
      loom.spawn(function()
        local ok, err = pcall(loom.sleep, 10)
        assert(not ok and loom.is_cancelled(err))
        loom.sleep(0.02)
        finished = true
      end)
      loom.sleep(0)
    end)
    assert.is_true(finished)
  end)

  it("reports a deadlock in main instead of hanging", function()
    local ok, err = pcall(loom.run, function()
      local t = loom.spawn(function() loom.sleep(math.huge) end)
      t:await()
    end)
    assert.is_false(ok)
    assert.matches("deadlock", err)
  end)

  it("runs again after a previous run, with fresh state", function()
    for i = 1, 3 do
      assert.are.equal(i, loom.run(function() loom.sleep(0.001); return i end))
    end
  end)

  it("reports an unretrieved task error on stderr with the task's name and traceback", function()
    local out, code = helper.lua([[
      local loom = require "loom"
      loom.run(function()
        local t = loom.spawn(function() error("lost error") end)
        t.name = "fetcher"
        loom.sleep(0.01)
      end)
      print("after run")
    ]])
    assert.are.equal(0, code)
    assert.matches("task 'fetcher' failed and nobody retrieved its error", out, 1, true)
    assert.matches("lost error", out, 1, true)
    assert.matches("stack traceback of task 'fetcher'", out, 1, true)
    assert.matches("after run", out, 1, true)
  end)

  it("reports an unretrieved error when the task is collected", function()
    local out = helper.lua([[
      local loom = require "loom"
      loom.run(function()
        loom.spawn(function() error("collected error") end)
        loom.sleep(0.01)
        collectgarbage(); collectgarbage()
        print("after collect")
        loom.sleep(0.01)
      end)
    ]])
    local at = out:find("collected error", 1, true)
    assert.truthy(at)
    assert.is_true(at < out:find("after collect", 1, true))
  end)

  it("does not report errors that were retrieved", function()
    local out = helper.lua([[
      local loom = require "loom"
      loom.run(function()
        local a = loom.spawn(function() error("seen by await") end)
        local b = loom.spawn(function() error("seen by error()") end)
        local c = loom.spawn(function() error("seen by result()") end)
        pcall(a.await, a)
        loom.sleep(0.01)
        assert(b:error())
        pcall(c.result, c)
        local d = loom.spawn(function() loom.sleep(1) end)
        d:cancel()
      end)
      io.write("clean")
    ]])
    assert.are.equal("clean", out)
  end)
end)

describe("loom.run's options", function()
  it("a table first is options; main gets every argument after fn, tables included", function()
    local a, b = loom.run({}, function(t, u) return t, u end, { shutdown = 1 }, { x = 2 })
    assert.are.same({ shutdown = 1 }, a)
    assert.are.same({ x = 2 }, b)
    -- a function first never takes options: a table without the old field names is an argument
    assert.are.same({ slowish = 1 }, loom.run(function(t) return t end, { slowish = 1 }))
  end)

  it("the old form loom.run(fn, opts) still works for one release, with a warning", function()
    local out, code = helper.lua([[
      local loom = require "loom"
      print(loom.run(function() return "ran" end, { debug = false }))
    ]])
    assert.are.equal(0, code, out)
    assert.matches("loom.run(fn, opts) is deprecated: write loom.run(opts, fn)", out, 1, true)
    assert.matches("ran", out, 1, true)
  end)

  it("checks the options", function()
    assert.has_error(function() loom.run({ debgu = true }, function() end) end,
      "bad argument #1 to 'run' (unknown option 'debgu')")
    assert.has_error(function() loom.run({}, 42) end, "bad argument #2 to 'run' (function expected, got number)")
    assert.has_error(function() loom.run({ shutdown_signals = "SIGINT" }, function() end) end,
      "bad argument #1 to 'run' (shutdown_signals must be a list of signal names)")
  end)
end)

describe("misuse outside a task", function()
  it("names the function the user called, at the user's line, not loom's internals", function()
    local cases = {
      { function() loom.http.get("http://127.0.0.1:1/") end, "loom.http.get" },
      { function() loom.fs.read_file("/etc/hostname") end, "loom.fs.read_file" },
      { function() loom.process.run { "true" } end, "loom.process.run" },
      { function() loom.tcp.listen("127.0.0.1", 0) end, "loom.tcp.listen" },
      { function() loom.queue():get() end, "loom.Queue:get" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(c[1])
      assert.is_false(ok)
      assert.matches("^spec/run_spec%.lua:%d+: " .. c[2]:gsub("%.", "%%.") ..
        ": not inside a task %(wrap the program in loom%.run%)$", err)
    end
  end)
end)
