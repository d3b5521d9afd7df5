-- workers = n: a supervisor and its worker processes (lua/loom/workers.lua),
-- driven from outside as an operator would: signals, kill -9, wrk.
local loom = require "loom"
local helper = require "spec.helper"
local run = helper.run

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Supervisors started by the test running: a failed test leaves none
-- behind (after_each kills them; their workers follow).
local started = {}

-- Starts spec/peers/workers_server.lua (port, n, mode) as a supervisor;
-- its output lines gather in `lines`.
local function start(n, mode)
  local port = helper.free_port()
  local p = assert(loom.process.spawn {
    "sh", "-c", ("LUA_PATH=%s LUA_CPATH=%s exec lua5.4 spec/peers/workers_server.lua %d %s %s 2>&1")
      :format(shell_quote(package.path), shell_quote(package.cpath), port, tostring(n), mode or ""),
    stdout = "pipe", stdin = "null" })
  local sup = { proc = p, port = port, lines = {}, pid = p.pid }
  started[#started + 1] = p.pid
  sup.reader = loom.spawn(function()
    for line in p.stdout:lines() do sup.lines[#sup.lines + 1] = line end
  end)
  function sup.output() return table.concat(sup.lines, "\n") end
  -- workers' own pids, from their "worker up <id> <pid>" lines
  function sup.workers()
    local w = {}
    for _, l in ipairs(sup.lines) do
      local id, pid = l:match("^%[worker %d+%] worker up (%d+) (%d+)")
      if id then w[#w + 1] = { id = tonumber(id), pid = tonumber(pid) } end
    end
    return w
  end
  function sup.finish()
    local status, sig = p:wait()
    sup.reader:await()
    p.stdout:close()
    return status, sig
  end
  -- a graceful stop: the exit status
  function sup.stop()
    p:kill("SIGTERM")
    return sup.finish()
  end
  return sup
end

-- One request on a connection of its own (so that the kernel picks a
-- worker's socket each time): the body, or nil, err.
local function get(port, path)
  local s, err = loom.tcp.connect("127.0.0.1", port)
  if not s then return nil, err end
  s:set_timeout(5)
  local ok, werr = s:write(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):format(path or "/"))
  local reply, rerr = s:read_all()
  s:close()
  if not ok then return nil, werr end
  if not reply then return nil, rerr end
  if not reply:match("^HTTP/1%.1 200") then return nil, reply:match("^[^\r]*") end
  return reply:match("\r\n\r\n(.*)$")
end

-- Waits until `pred()` holds (polling every 20 ms), for up to `limit` s.
local function eventually(pred, limit)
  local t0 = loom.now()
  while not pred() do
    if loom.now() - t0 > limit then return false end
    loom.sleep(0.02)
  end
  return true
end

local function alive(pid)
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

local function ready(sup, n)
  helper.wait_port(sup.port)
  assert(eventually(function() return #sup.workers() >= n end, 5), sup.output())
end

describe("workers = n", function()
  after_each(function()
    for _, pid in ipairs(started) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    started = {}
  end)

  it("serves from n processes sharing the port; SIGTERM lets requests in flight finish, then refuses", function()
    run(function()
      local sup = start(2)
      ready(sup, 2)
      local seen = {}
      for _ = 1, 40 do
        local body = assert(get(sup.port))
        seen[body:match("^(%d+)")] = true
      end
      assert.is_true(seen["1"] and seen["2"], "both workers served")
      local slow = loom.spawn(get, sup.port, "/slow")
      loom.sleep(0.3)
      sup.proc:kill("SIGTERM")
      local body, err = slow:await()
      assert.is_truthy(body, err) -- the request in flight was answered
      assert.are.equal(0, sup.finish())
      assert.is_nil(loom.tcp.connect("127.0.0.1", sup.port)) -- refused once all stopped
      assert.matches("supervisor done\ttrue", sup.output(), 1, true)
      assert.matches("[worker 1] worker up 1", sup.output(), 1, true) -- logs carry their id
      for _, w in ipairs(sup.workers()) do assert.is_false(alive(w.pid)) end
    end, 15)
  end)

  it("replaces a worker killed with -9 within a second; the other worker's requests never fail", function()
    run(function()
      local sup = start(2)
      ready(sup, 2)
      local victim = sup.workers()[1]
      local stop, ok, failed = false, 0, 0
      local load = {}
      for i = 1, 8 do
        load[i] = loom.spawn(function()
          while not stop do
            if get(sup.port) then ok = ok + 1 else failed = failed + 1 end
          end
        end)
      end
      loom.sleep(0.3)
      os.execute("kill -9 " .. victim.pid)
      local t0 = loom.now()
      assert.is_true(eventually(function() return #sup.workers() >= 3 end, 1.5), sup.output())
      local replacement = sup.workers()[3]
      assert.are.equal(victim.id, replacement.id) -- keeps the id of the one it replaces
      assert.is_true(loom.now() - t0 < 1.5)
      -- the replacement serves
      assert.is_true(eventually(function()
        local body = get(sup.port)
        return body and body == ("%d %d"):format(replacement.id, replacement.pid)
      end, 3))
      stop = true
      for _, t in ipairs(load) do t:await() end
      -- at most the requests the killed worker had in hand fail (connections
      -- queued on its socket wait for its replacement)
      assert.is_true(failed <= #load, ("%d failed of %d"):format(failed, ok + failed))
      assert.is_true(ok > 50)
      assert.are.equal(0, sup.stop())
    end, 20)
  end)

  it("backs off a worker that fails at start-up instead of restarting it in a tight loop", function()
    run(function()
      local sup = start(1, "crash")
      loom.sleep(1.6)
      local restarts = 0
      for _, l in ipairs(sup.lines) do
        if l:match("^loom: worker 1 .- before it served; restarting in") then restarts = restarts + 1 end
      end
      -- 0.1 + 0.2 + 0.4 + 0.8 s of back-off: at most 5 starts in 1.6 s
      assert.is_true(restarts >= 2 and restarts <= 5, sup.output())
      assert.matches("restarting in 0.4 s", sup.output(), 1, true)
      assert.are.equal(0, sup.stop())
    end, 10)
  end)

  it("SIGHUP replaces every worker one at a time under wrk load with no failed request", function()
    run(function()
      local sup = start(2)
      ready(sup, 2)
      local before = sup.workers()
      local wrk = loom.spawn(loom.process.run, { "env", "-u", "LD_PRELOAD", "wrk", "-t1", "-c20", "-d3s",
        ("http://127.0.0.1:%d/"):format(sup.port), timeout = 10 })
      loom.sleep(1)
      sup.proc:kill("SIGHUP")
      local out = assert(wrk:await())
      assert.is_true(#sup.workers() >= 4, sup.output()) -- two replacements came up
      local requests = tonumber(out:match("(%d+) requests in"))
      assert.is_true(requests > 1000, out)
      assert.is_nil(out:match("Socket errors"), out)
      assert.is_nil(out:match("Non%-2xx"), out)
      for _, w in ipairs(before) do -- the old ones stopped
        assert.is_true(eventually(function() return not alive(w.pid) end, 3))
      end
      assert.are.equal(0, sup.stop())
    end, 25)
  end)

  it("SIGTTIN adds a worker and SIGTTOU removes one", function()
    run(function()
      local sup = start(1, "tcp")
      ready(sup, 1)
      local function ids()
        local seen = {}
        for _ = 1, 40 do
          local s = assert(loom.tcp.connect("127.0.0.1", sup.port))
          s:write("hi\n")
          local line = s:read_line()
          s:close()
          if line then seen[tonumber(line:match("^(%d+)"))] = true end
        end
        return seen
      end
      sup.proc:kill("SIGTTIN")
      assert.is_true(eventually(function() return #sup.workers() >= 2 end, 3), sup.output())
      assert.is_true(eventually(function() return ids()[2] == true end, 3))
      sup.proc:kill("SIGTTOU")
      local second = sup.workers()[2]
      assert.is_true(eventually(function() return not alive(second.pid) end, 3))
      local seen = ids()
      assert.is_true(seen[1] and not seen[2])
      assert.are.equal(0, sup.stop())
    end, 20)
  end)

  it("workers exit when their supervisor is killed with -9: no orphans", function()
    run(function()
      local sup = start(2)
      ready(sup, 2)
      local ws = sup.workers()
      sup.proc:kill("SIGKILL")
      sup.finish()
      for _, w in ipairs(ws) do
        assert.is_true(eventually(function() return not alive(w.pid) end, 3), "worker " .. w.id .. " still runs")
      end
    end, 15)
  end)

  it("checks its options", function()
    run(function()
      local h = function() end
      assert.has_error(function() loom.http.serve("127.0.0.1", 0, h, { workers = 0 }) end,
        "bad argument #4 to 'serve' (workers must be a positive integer or \"auto\")")
      assert.has_error(function() loom.tcp.serve("127.0.0.1", 0, h, { workers = "many" }) end,
        "bad argument #4 to 'serve' (workers must be a positive integer or \"auto\")")
      assert.has_error(function() loom.http.serve("127.0.0.1", 0, h, { workers = 2, shutdown_timeout = "x" }) end,
        "bad argument #4 to 'serve' (shutdown_timeout must be a number of seconds)")
      assert.is_nil(loom.worker_id())
    end)
  end)
end)
