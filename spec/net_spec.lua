local loom = require "loom"
local helper = require "helper"
local run = helper.run

-- A server on a free port of 127.0.0.1 running handler; returns it and its port.
local function server(handler)
  local srv = assert(loom.tcp.serve("127.0.0.1", 0, handler))
  local _, port = srv:address()
  return srv, port
end

local function echo(s)
  while true do
    local data = s:read()
    if not data then return end
    s:write(data)
  end
end

describe("loom.tcp streams", function()
  it("carry bytes both ways with every read method", function()
    run(function()
      local srv, port = server(function(s)
        s:write("line one\r\nline two\nrecord|rest")
        s:write({ "12345", "6789" })
        s:shutdown()
        assert(s:read_all() == "from client")
      end)
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      assert.are.equal("line one", c:read_line())
      assert.are.equal("line two", c:read_line())
      assert.are.equal("record", c:read_until("|"))
      assert.are.equal("rest1", c:read_exactly(5))
      assert.are.equal("23456789", c:read_all())
      assert.are.same({ nil, "eof", "EOF" }, { c:read() })
      assert.are.same({ nil, "eof", "EOF" }, { c:read_line() }) -- again after the end
      assert(c:write("from client"))
      c:shutdown()
      loom.sleep(0.01)
      c:close()
      srv:close()
    end)
  end)

  it("report their addresses, accept host names, and work over IPv6 when there is one", function()
    run(function()
      local srv, port = server(echo)
      local c = assert(loom.tcp.connect("localhost", port))
      local host, p = c:peername()
      assert.are.equal(port, p)
      assert.matches("^127%.", host)
      local lh, lp = c:sockname()
      assert.is_string(lh)
      assert.is_true(lp > 0)
      c:close()
      srv:close()
      local srv6 = loom.tcp.listen("::1", 0)
      if srv6 then
        local _, p6 = srv6:address()
        local c6 = assert(loom.tcp.connect("::1", p6))
        local s6 = assert(srv6:accept())
        assert(c6:write("v6"))
        assert.are.equal("v6", s6:read())
        c6:close(); s6:close(); srv6:close()
      end
    end)
  end)

  it("lines() iterates until the end", function()
    run(function()
      local srv, port = server(function(s) s:write("a\nb\n\nc") end)
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      local got = {}
      for line in c:lines() do got[#got + 1] = line end
      assert.are.same({ "a", "b", "", "c" }, got)
      c:close(); srv:close()
    end)
  end)

  it("read_line(true) takes only whole lines: an unended last one comes back as the partial", function()
    run(function()
      local srv, port = server(function(s) s:write("a\r\nb") end)
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      assert.are.equal("a", c:read_line(true))
      assert.are.same({ nil, "eof", "EOF", "b" }, { c:read_line(true) })
      assert.are.same({ nil, "eof", "EOF" }, { c:read_line(true) })
      c:close(); srv:close()
    end)
  end)

  it("fail clearly: refused, unknown host, timeout", function()
    run(function()
      local probe = assert(loom.tcp.listen("127.0.0.1", 0))
      local _, free_port = probe:address()
      probe:close()
      local s, err, code = loom.tcp.connect("127.0.0.1", free_port)
      assert.is_nil(s)
      assert.are.equal("ECONNREFUSED", code)
      assert.matches("127.0.0.1:%d+: connection refused", err)
      s, err, code = loom.tcp.connect("no-such-host.invalid", 80)
      assert.is_nil(s)
      assert.matches("^EAI_", code)
      local srv, port = server(echo)
      s, err, code = loom.tcp.connect("127.0.0.1", port, { timeout = 0 })
      assert.is_nil(s)
      assert.are.equal("ETIMEDOUT", code)
      srv:close()
    end)
  end)

  it("check their arguments", function()
    run(function()
      assert.has_error(function() loom.tcp.connect("127.0.0.1", nil) end,
        "bad argument #2 to 'connect' (number expected, got nil)")
      assert.has_error(function() loom.tcp.connect(5, 80) end, "bad argument #1 to 'connect' (string expected, got number)")
      assert.has_error(function() loom.tcp.connect("127.0.0.1", 70000) end,
        "bad argument #2 to 'connect' (port must be 0-65535)")
      assert.has_error(function() loom.tcp.serve("127.0.0.1", 0, "nope") end)
    end)
    assert.has_error(function() loom.tcp.connect("127.0.0.1", 80) end, "loom.tcp.connect: not inside a task (wrap the program in loom.run)")
  end)

  it("time out reads and writes with set_timeout", function()
    run(function()
      local srv, port = server(function(s) loom.sleep(1) end)
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      c:set_timeout(0.05)
      local t0 = loom.now()
      assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { c:read() })
      assert.is_true(loom.now() - t0 >= 0.05)
      c:close(); srv:close()
    end)
  end)

  it("peer reset mid-read and mid-write gives nil, msg, code", function()
    run(function()
      -- the server closes with unread data: the kernel resets the connection
      local srv, port = server(function(s) loom.sleep(0.02) end)
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      assert(c:write(("x"):rep(1000)))
      local data, err, code = c:read()
      assert.is_nil(data)
      assert.is_true(code == "ECONNRESET" or code == "EOF", code)
      local failed
      for _ = 1, 200 do
        local ok, _, wcode = c:write(("y"):rep(65536))
        if not ok then failed = wcode; break end
        loom.sleep(0.001)
      end
      assert.is_true(failed == "EPIPE" or failed == "ECONNRESET", tostring(failed))
      c:close(); srv:close()
    end)
  end)

  it("a peer that half-closes can still be written to", function()
    run(function()
      local srv, port = server(function(s)
        local all = s:read_all() -- until the client's shutdown
        s:write("got " .. #all .. " bytes")
      end)
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      assert(c:write(("z"):rep(100000)))
      assert(c:shutdown())
      assert.are.equal("got 100000 bytes", c:read_all())
      c:close(); srv:close()
    end)
  end)

  it("close: harmless twice, writes after it fail, a blocked reader gets 'closed'", function()
    run(function()
      local srv, port = server(function(s) loom.sleep(1) end)
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      local reader = loom.spawn(function() return c:read() end)
      loom.sleep(0.01)
      c:close()
      c:close()
      assert.are.same({ nil, "closed", "ECLOSED" }, { reader:await() })
      assert.are.same({ nil, "closed", "ECLOSED" }, { c:write("x") })
      assert.are.same({ nil, "closed", "ECLOSED" }, { c:read() })
      srv:close()
    end)
  end)

  it("limits line length and returns a short read_exactly with what came", function()
    run(function()
      local srv, port = server(function(s) s:write(("L"):rep(100) .. "\n" .. "tail") end)
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      c:set_line_max(10)
      local line, err, code = c:read_line()
      assert.is_nil(line)
      assert.are.equal("ETOOLONG", code)
      assert.matches("longer than 10", err)
      assert.are.equal(("L"):rep(100), c:read_exactly(100))
      c:read_exactly(1)
      assert.are.same({ nil, "eof", "EOF", "tail" }, { c:read_exactly(10) })
      c:close(); srv:close()
    end)
  end)

  it("a cancelled reader loses no bytes", function()
    run(function()
      local srv, port = server(function(s) for i = 1, 50 do s:write(i .. "\n"); loom.sleep(0.001) end end)
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      local got = {}
      for _ = 1, 20 do
        local r = loom.spawn(function() return c:read_line() end)
        loom.sleep(0)
        r:cancel()
        local ok, line = pcall(r.await, r)
        if ok and line then got[#got + 1] = line end
      end
      for line in c:lines() do got[#got + 1] = line end
      local expect = {}
      for i = 1, 50 do expect[i] = tostring(i) end
      assert.are.same(expect, got)
      c:close(); srv:close()
    end)
  end)

  it("backpressure: a slow reader makes the writer wait instead of growing memory", function()
    run(function()
      local received = 0
      local srv, port = server(function(s)
        while true do
          local d = s:read(65536)
          if not d then return end
          received = received + #d
          loom.sleep(0.002)
        end
      end)
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      local chunk = ("b"):rep(1024 * 1024)
      local t0 = loom.now()
      for _ = 1, 16 do assert(c:write(chunk)) end
      assert.is_true(loom.now() - t0 > 0.01) -- some writes had to wait
      assert(c:shutdown())
      while received < 16 * 1024 * 1024 do loom.sleep(0.01) end
      c:close(); srv:close()
    end, 20)
  end)

  it("a failing handler is logged with its traceback, its connection reset, and the server keeps serving", function()
    local out = helper.lua([[
      local loom = require "loom"
      loom.run(function()
        local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
          local line = s:read_line()
          if line == "boom" then error("handler exploded") end
          s:write("ok " .. line .. "\n")
        end))
        local _, port = srv:address()
        local a = assert(loom.tcp.connect("127.0.0.1", port))
        a:write("boom\n")
        print("first connection:", a:read())
        local b = assert(loom.tcp.connect("127.0.0.1", port))
        b:write("fine\n")
        print("second connection:", b:read_line())
        a:close(); b:close(); srv:close()
      end)
    ]])
    assert.matches("handler failed: .*handler exploded", out)
    assert.matches("stack traceback", out, 1, true)
    assert.not_matches("loom/net%.lua", out) -- the handler's frames, not the acceptor's
    -- the handler stopped half-way: its peer gets a reset, not a clean end
    assert.matches("first connection:\tnil\tconnection reset by peer\tECONNRESET", out, 1, true)
    assert.matches("second connection:\tok fine", out, 1, true)
  end)

  it("1,000 concurrent connections and 10,000 connect/close cycles leave nothing behind", function()
    local function rss_kb()
      local h = io.open("/proc/self/statm")
      local pages = h:read("n"); pages = h:read("n")
      h:close()
      return pages * 4
    end
    run(function()
      local srv, port = server(echo)
      local conns = {}
      for i = 1, 1000 do conns[i] = assert(loom.tcp.connect("127.0.0.1", port)) end
      loom.gather(table.unpack((function()
        local fns = {}
        for i = 1, 1000 do
          fns[i] = function()
            assert(conns[i]:write("ping " .. i .. "\n"))
            assert(conns[i]:read_line() == "ping " .. i)
          end
        end
        return fns
      end)()))
      for i = 1, 1000 do conns[i]:close() end
      local function cycles(n)
        for _ = 1, n do
          local c = assert(loom.tcp.connect("127.0.0.1", port))
          c:close()
        end
      end
      cycles(2000)
      collectgarbage(); collectgarbage()
      local before = rss_kb()
      cycles(8000)
      collectgarbage(); collectgarbage()
      if not helper.sanitized then
        assert.is_true(rss_kb() - before < 4096, "RSS grew by " .. (rss_kb() - before) .. " KB")
      end
      srv:close()
      loom.sleep(0.05) -- the server's handlers see their clients gone
    end, 60)
  end)

  it("reuseport lets two servers share a port", function()
    run(function()
      local a = assert(loom.tcp.listen("127.0.0.1", 0, { reuseport = true }))
      local _, port = a:address()
      local b = assert(loom.tcp.listen("127.0.0.1", port, { reuseport = true }))
      local _, _, code = loom.tcp.listen("127.0.0.1", port)
      assert.are.equal("EADDRINUSE", code)
      a:close(); b:close()
    end)
  end)
end)

describe("loom.unix streams", function()
  it("echo over a Unix socket", function()
    run(function()
      local path = os.tmpname()
      os.remove(path)
      local srv = assert(loom.unix.serve(path, echo))
      assert.are.equal(path, srv:address())
      local c = assert(loom.unix.connect(path))
      assert(c:write("over a pipe\n"))
      assert.are.equal("over a pipe", c:read_line())
      c:close(); srv:close()
      os.remove(path)
      local _, _, code = loom.unix.connect(path)
      assert.are.equal("ENOENT", code)
    end)
  end)
end)

describe("loom.udp", function()
  it("sends and receives datagrams, with host names, timeouts and close", function()
    run(function()
      local a = assert(loom.udp.bind("127.0.0.1", 0))
      local b = assert(loom.udp.bind("localhost", 0))
      local _, pa = a:sockname()
      local _, pb = b:sockname()
      assert(a:send("ping", "localhost", pb))
      assert.are.same({ "ping", "127.0.0.1", pa }, { b:recv() })
      for i = 1, 5 do assert(b:send("n" .. i, "127.0.0.1", pa)) end
      loom.sleep(0.01) -- queued while nobody waits
      for i = 1, 5 do assert.are.equal("n" .. i, (a:recv(1))) end
      assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { a:recv(0.02) })
      local waiter = loom.spawn(function() return a:recv() end)
      loom.sleep(0)
      a:close()
      a:close()
      assert.are.same({ nil, "closed", "ECLOSED" }, { waiter:await() })
      b:close()
      assert.has_error(function() loom.udp.bind("127.0.0.1", -1) end, "bad argument #2 to 'bind' (port must be 0-65535)")
    end)
  end)
end)

describe("max_connections", function()
  it("pauses accepting at the limit; waiting clients are served as connections end", function()
    run(function()
      local active, peak, served = 0, 0, 0
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        active = active + 1
        peak = math.max(peak, active)
        s:read_line()
        loom.sleep(0.02)
        s:write("done\n")
        active = active - 1
        served = served + 1
      end, { max_connections = 2 }))
      local _, port = srv:address()
      local ts = {}
      for i = 1, 6 do
        ts[i] = loom.spawn(function()
          local c = assert(loom.tcp.connect("127.0.0.1", port))
          c:write("x\n")
          local r = c:read_line()
          c:close()
          return r
        end)
      end
      for i = 1, 6 do assert.are.equal("done", ts[i]:await()) end
      assert.are.equal(6, served)
      assert.are.equal(2, peak)
      srv:close()
      assert.has_error(function() loom.tcp.serve("127.0.0.1", 0, print, { max_connections = 0 }) end,
        "bad argument #3 to 'serve' (max_connections must be a positive integer)")
    end)
  end)

  it("in loom.http, closes idle keep-alive connections first to make room", function()
    run(function()
      local srv = assert(loom.http.serve("127.0.0.1", 0, function() return 200, {}, "hi" end,
        { max_connections = 3 }))
      local _, port = srv:address()
      local idle = {}
      for i = 1, 3 do
        idle[i] = assert(loom.tcp.connect("127.0.0.1", port))
        idle[i]:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert.matches("^HTTP/1.1 200", idle[i]:read_until("hi"))
      end
      loom.sleep(0.05) -- three idle keep-alive connections: the server is full
      local r = assert(loom.timeout(2, loom.http.get, ("http://127.0.0.1:%d/"):format(port)))
      assert.is_true(r)
      local closed = 0
      for i = 1, 3 do
        idle[i]:set_timeout(0.2)
        if select(3, idle[i]:read()) == "EOF" then closed = closed + 1 end
        idle[i]:close()
      end
      assert.is_true(closed >= 1)
      loom.http.close_idle(); srv:close()
    end)
  end)
end)

describe("running out of file descriptors", function()
  it("makes accept back off and recover, without spinning or dying", function()
    local out, code = helper.lua([[
      local loom = require "loom"
      loom.run(function()
        local served = 0
        local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s) served = served + 1; s:write("hi\n") end))
        local _, port = srv:address()
        local hogs = {}
        while true do
          local f = io.open("/dev/null")
          if not f then break end
          hogs[#hogs + 1] = f
        end
        hogs[#hogs]:close(); hogs[#hogs] = nil -- one descriptor: the client's socket
        local c = loom.tcp.connect("127.0.0.1", port, { timeout = 0.5 })
        loom.sleep(0.2) -- the server cannot accept it: EMFILE, and it backs off
        local t0 = os.clock()
        loom.sleep(0.2)
        local cpu = os.clock() - t0
        for _, f in ipairs(hogs) do f:close() end
        print("the client that waited:", c and c:read_line())
        if c then c:close() end
        local c2 = assert(loom.tcp.connect("127.0.0.1", port))
        print("after recovery:", c2:read_line(), "cpu while starved:", cpu < 0.1)
        c2:close(); srv:close()
      end)
    ]], { env = "ulimit -n 64;" })
    assert.are.equal(0, code, out)
    assert.matches("the client that waited:\thi", out, 1, true) -- queued, not accepted and dropped
    assert.matches("after recovery:	hi	cpu while starved:	true", out, 1, true)
  end)

  it("serves every one of 100 clients of a server limited to 32 descriptors", function()
    local cmd = ("sh -c 'ulimit -n 32; exec env LUA_PATH=%q LUA_CPATH=%q lua5.4 -e %q'"):format(
      package.path, package.cpath, [[
        local loom = require "loom"
        loom.run(function()
          local served = 0
          local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
            local line = s:read_line()
            loom.sleep(0.01)
            s:write("ok ", line, "\n")
            served = served + 1
          end, { backlog = 200 }))
          print(select(2, srv:address())); io.stdout:flush()
          local t0 = loom.now()
          while served < 100 and loom.now() - t0 < 15 do loom.sleep(0.05) end
          srv:close()
        end)
      ]])
    local p = assert(io.popen(cmd))
    local port = p:read("n")
    local served = 0
    local ok = pcall(run, function()
      local tasks = {}
      for i = 1, 100 do
        tasks[i] = loom.spawn(function()
          local c = assert(loom.tcp.connect("127.0.0.1", port))
          c:set_timeout(10)
          c:write(i, "\n")
          local reply = c:read_line()
          c:close()
          if reply == "ok " .. i then served = served + 1 end
        end)
      end
      for i = 1, 100 do pcall(tasks[i].await, tasks[i]) end
    end, 20)
    p:close()
    assert.is_true(ok)
    assert.are.equal(100, served)
  end)
end)

