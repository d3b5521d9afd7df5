-- Seeing inside a running program: loom.stats(), the inspect signal and
-- tools/loom-ps.
local loom = require "loom"
local helper = require "helper"
local run = helper.run

-- A program blocked in sleep, a queue, a read and a lock, that sends itself
-- the inspect signal three times.
local BLOCKED = [[
local loom = require "loom"
local pid = io.open("/proc/self/stat"):read("n")
loom.run(function()
  local q, lock = loom.queue(), loom.lock()
  loom.spawn(function() loom.sleep(100) end).name = "sleeper"
  loom.spawn(function() q:get() end).name = "getter"
  local held <close> = lock:acquire()
  loom.spawn(function() lock:acquire() end).name = "locker"
  local srv <close> = loom.tcp.listen("127.0.0.1", 0)
  local s <close> = loom.tcp.connect("127.0.0.1", select(2, srv:address()))
  loom.spawn(function() s:read() end).name = "reader"
  for _ = 1, 3 do
    loom.sleep(0.1)
    os.execute("kill -USR1 " .. pid)
  end
  loom.sleep(0.1)
  print("still running")
  os.exit(0)
end)
]]

describe("inspect", function()
  it("writes the task tree, where each task waits and for how long, on every signal", function()
    local file = os.tmpname()
    local out, code = helper.lua(BLOCKED, { env = "LOOM_INSPECT=SIGUSR1 LOOM_INSPECT_FILE=" .. file })
    local dump = io.open(file):read("a")
    os.remove(file)
    assert.are.equal(0, code, out)
    assert.matches("still running", out)
    local n = 0
    for _ in dump:gmatch("loom: inspect at ") do n = n + 1 end
    assert.are.equal(3, n, dump)
    for _, what in ipairs { "sleeper %[waiting%] in sleep at %(command line%):5 for %d+%.%d+ s",
      "getter %[waiting%] in get at %(command line%):6", "locker %[waiting%] in acquire at %(command line%):8",
      "reader %[waiting%] in read at %(command line%):11", "main %[waiting%] in sleep at %(command line%):1[36]" } do
      assert.matches(what, dump)
    end
    assert.matches("loom: stats: 5 tasks, 0 ready, 2 handles, %d+ steps; loop lag", dump)
    -- the ages grow between two dumps
    local ages = {}
    for age in dump:gmatch("sleeper %[waiting%] in sleep at [^\n]* for (%d+%.%d+) s") do ages[#ages + 1] = tonumber(age) end
    assert.is_true(ages[3] > ages[1], dump)
  end)

  it("writes to stderr without a file, and the option works as the variable does", function()
    local script = BLOCKED:gsub("loom.run%(function%(%)", 'loom.run({ inspect = "SIGUSR1" }, function()')
    local out, code = helper.lua(script)
    assert.are.equal(0, code, out)
    assert.matches("reader %[waiting%] in read", out)
    assert.matches("still running", out)
  end)

  it("costs nothing when off: no handler is installed (the signal keeps its default effect)", function()
    local out, code = helper.lua(BLOCKED)
    assert.are_not.equal(0, code)
    assert.not_matches("loom: inspect", out)
    assert.not_matches("still running", out)
  end)

  it("tools/loom-ps signals a live program and prints its dump", function()
    local file = os.tmpname()
    local prog = os.tmpname()
    local f = io.open(prog, "w")
    f:write('local loom = require "loom"\nloom.run(function()\n',
      '  loom.spawn(function() loom.sleep(100) end).name = "idle worker"\n  loom.sleep(2)\nend)\n')
    f:close()
    run(function()
      local child = assert(loom.process.spawn {
        "sh", "-c", ("LOOM_INSPECT=SIGUSR1 LOOM_INSPECT_FILE=%s LUA_PATH='%s' LUA_CPATH='%s' exec lua5.4 %s")
          :format(file, package.path, package.cpath, prog) })
      loom.sleep(0.3)
      local out, code = loom.process.run { "sh", "tools/loom-ps", tostring(child.pid) }
      assert.are.equal(0, code, out)
      assert.matches("idle worker %[waiting%] in sleep at [^\n]*:3 for", out)
      assert.matches("loom: stats: 2 tasks", out)
      child:kill()
      child:wait()
    end)
    os.remove(file)
    os.remove(prog)
  end)
end)

describe("loom.stats", function()
  it("counts tasks, ready tasks, handles and steps", function()
    run(function()
      local s0 = loom.stats()
      assert.are.equal(1, s0.tasks)
      assert.are.equal(0, s0.handles)
      local srv <close> = assert(loom.tcp.listen("127.0.0.1", 0))
      local c <close> = assert(loom.tcp.connect("127.0.0.1", select(2, srv:address())))
      local a <close> = assert(srv:accept())
      local sleepers = {}
      for i = 1, 3 do sleepers[i] = loom.spawn(loom.sleep, 10) end
      local s1 = loom.stats()
      assert.are.equal(4, s1.tasks)
      assert.are.equal(3, s1.ready) -- spawned, not yet started
      assert.are.equal(3, s1.handles)
      loom.sleep(0)
      local s2 = loom.stats()
      assert.are.equal(0, s2.ready)
      assert.is_true(s2.steps >= s1.steps + 4)
      for _, t in ipairs(sleepers) do t:cancel() end
    end)
  end)

  it("reports the loop's lag when a task holds the loop for 200 ms", function()
    run(function()
      local ticker = loom.spawn(function() while true do loom.sleep(0.01) end end)
      loom.sleep(0.1)
      assert.is_true(loom.stats().loop_lag_max < 0.1)
      local t0 = os.clock()
      while os.clock() - t0 < 0.2 do end -- blocks the loop
      loom.sleep(0.05)
      local s = loom.stats()
      assert.is_true(s.loop_lag_max >= 0.15, s.loop_lag_max)
      assert.is_true(s.loop_lag_recent >= 0.15, s.loop_lag_recent)
      ticker:cancel()
    end)
  end)

  it("raises outside a task", function()
    assert.has_error(function() loom.stats() end)
  end)
end)
