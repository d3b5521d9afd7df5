local loom = require "loom"
local helper = require "helper"
local run = helper.run

describe("loom.process", function()
  it("runs a command and captures its output and exit code", function()
    run(function()
      assert.are.same({ "hello world\n", 0 }, { loom.process.run{ "echo", "hello", "world" } })
      assert.are.same({ "out\n", 3, "err\n" },
        { loom.process.run{ "sh", "-c", "echo out; echo err >&2; exit 3", stderr = "pipe" } })
    end)
  end)

  it("does not deadlock on several MiB of output while being fed", function()
    run(function()
      local input = ("abcdefgh\n"):rep(400000) -- 3.6 MB
      local out, code = loom.process.run{ "sh", "-c", "cat; head -c 3000000 /dev/zero", input = input }
      assert.are.equal(0, code)
      assert.are.equal(#input + 3000000, #out)
      assert.is_true(out:sub(1, #input) == input)
    end, 20)
  end)

  it("reports a program that does not exist", function()
    run(function()
      local p, err, code = loom.process.spawn{ "no-such-program-for-loom" }
      assert.is_nil(p)
      assert.are.equal("ENOENT", code)
      assert.matches("no%-such%-program%-for%-loom", err)
      local out, e2, c2 = loom.process.run{ "no-such-program-for-loom" }
      assert.is_nil(out)
      assert.are.equal("ENOENT", c2)
    end)
  end)

  it("kills, reports exit by signal, sets the environment and the directory", function()
    run(function()
      local p = assert(loom.process.spawn{ "sleep", "10" })
      assert.is_true(p.pid > 0)
      assert.is_true(p:kill("SIGKILL"))
      assert.are.same({ nil, "SIGKILL" }, { p:wait() })
      assert.are.same({ nil, "SIGKILL" }, { p:wait() }) -- again, at once
      local _, _, code = p:kill()
      assert.are.equal("ESRCH", code)
      assert.are.same({ "bar\n", 0 }, { loom.process.run{ "sh", "-c", "echo $FOO", env = { FOO = "bar" } } })
      assert.are.same({ "/\n", 0 }, { loom.process.run{ "pwd", cwd = "/" } })
      assert.are.same({ "", 7 }, { loom.process.run{ "sh", "-c", "exit 7" } })
    end)
  end)

  it("streams a child's output line by line through a pipe", function()
    run(function()
      local p = assert(loom.process.spawn{ "sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.01; done", stdout = "pipe" })
      local lines = {}
      for line in p.stdout:lines() do lines[#lines + 1] = line end
      assert.are.same({ "line 1", "line 2", "line 3" }, lines)
      assert.are.equal(0, p:wait())
      p.stdout:close()
    end)
  end)

  it("a run with a timeout kills the child", function()
    run(function()
      local t0 = loom.now()
      assert.are.same({ nil, "sleep: timeout", "ETIMEDOUT" }, { loom.process.run{ "sleep", "5", timeout = 0.1 } })
      assert.is_true(loom.now() - t0 < 1)
    end)
  end)

  it("checks its arguments", function()
    run(function()
      assert.has_error(function() loom.process.spawn("ls") end, "bad argument #1 to 'spawn' (table expected, got string)")
      assert.has_error(function() loom.process.spawn{ "ls", stdout = "file" } end)
      local p = assert(loom.process.spawn{ "true" })
      assert.has_error(function() p:kill("SIGNOPE") end)
      p:wait()
    end)
  end)
end)

describe("loom.signal", function()
  it("waits for the first of several signals", function()
    run(function()
      local waiter = loom.spawn(function() return loom.signal.wait("SIGUSR1", "SIGUSR2") end)
      loom.sleep(0.01)
      local pid = loom.process.run{ "sh", "-c", "echo $PPID" }
      -- the shell's parent is this process: signal it through kill(1)
      assert(loom.process.run{ "sh", "-c", "kill -USR2 " .. pid:match("%d+") }) -- the shell's kill: no procps needed
      assert.are.equal("SIGUSR2", waiter:await())
      assert.has_error(function() loom.signal.wait("SIGNOPE") end)
    end)
  end)
end)

-- Runs a Lua script in a child, signals it after `after` seconds, and returns
-- its output and exit status (as the shell reports it: 128 + signal).
local function signalled(script_path, sig, after)
  local cmd = ("LUA_PATH='%s' LUA_CPATH='%s' sh -c 'lua5.4 %s & pid=$!; sleep %g; kill -%s $pid; wait $pid; echo status $?' 2>&1")
    :format(package.path, package.cpath, script_path, after, sig)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out, tonumber(out:match("status (%d+)"))
end

describe("loom.run with shutdown_signals", function()
  it("runs the cleanup on SIGINT or SIGTERM and exits with the conventional status", function()
    local script = os.tmpname()
    local h = assert(io.open(script, "w"))
    h:write([[
      local loom = require "loom"
      loom.run({ shutdown_signals = { "SIGINT", "SIGTERM" } }, function()
        loom.spawn(function()
          local _ <close> = setmetatable({}, { __close = function() io.write("worker cleaned\n") end })
          loom.sleep(10)
        end)
        local _ <close> = setmetatable({}, { __close = function()
          loom.sleep(0.02)
          io.write("main cleaned\n")
          io.flush()
        end })
        io.write("ready\n"); io.flush()
        loom.sleep(10)
      end)
      io.write("not reached\n")
    ]])
    h:close()
    for sig, expected in pairs({ INT = 130, TERM = 143 }) do
      local out, status = signalled(script, sig, 0.3)
      assert.are.equal(expected, status, out)
      assert.matches("main cleaned", out, 1, true)
      assert.matches("worker cleaned", out, 1, true)
      assert.is_nil(out:find("not reached", 1, true))
    end
    os.remove(script)
  end)
end)

describe("process examples", function()
  local function example(name)
    local out = helper.lua(nil, { file = "examples/" .. name .. ".lua", env = "LOOM_EXAMPLE_SCALE=0.1" })
    assert.is_nil(out:find("stack traceback", 1, true), out)
    return out
  end

  it("process_lines.lua gets each line while the command runs", function()
    local out = example("process_lines")
    local times = {}
    for t in out:gmatch("(%d+%.%d+)s  step %d") do times[#times + 1] = tonumber(t) end
    assert.are.equal(4, #times)
    assert.is_true(times[4] - times[1] >= 0.12) -- spread over the run, not all at the end
    assert.matches("exit code 0", out, 1, true)
  end)

  it("pipeline.lua pipes one process into another", function()
    local out = example("pipeline")
    assert.matches("largest three: 10000, 9999, 9998", out, 1, true)
    if not helper.sanitized then -- under ASan, LeakSanitizer may end seq and sort (they inherit it)
      assert.matches("producer exited 0, sorter exited 0", out, 1, true)
    end
  end)

  it("graceful_shutdown.lua finishes the request in flight after SIGINT", function()
    local out = helper.lua([[
      local loom = require "loom"
      loom.run(function()
        local server = loom.process.spawn{ "lua5.4", "examples/graceful_shutdown.lua", stdout = "pipe" }
        local port = tonumber(server.stdout:read_line():match(":(%d+)$"))
        local c = assert(loom.tcp.connect("127.0.0.1", port))
        c:write("slow job\n")
        loom.sleep(0.05)
        server:kill("SIGINT")
        print("client got: " .. tostring(c:read_line()))
        print("server said: " .. server.stdout:read_all())
        print("server exit: " .. tostring(server:wait()))
        c:close(); server.stdout:close()
      end)
    ]], { env = "LOOM_EXAMPLE_SCALE=0.3" })
    assert.matches("client got: done: slow job", out, 1, true)
    assert.matches("SIGINT: no new connections; finishing 1 request(s) in flight", out, 1, true)
    assert.matches("shut down after serving 1 request(s)", out, 1, true)
    assert.matches("server exit: 0", out, 1, true)
  end)
end)

