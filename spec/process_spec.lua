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
      assert(loom.process.run{ "kill", "-USR2", pid:match("%d+") })
      assert.are.equal("SIGUSR2", waiter:await())
      assert.has_error(function() loom.signal.wait("SIGNOPE") end)
    end)
  end)
end)
