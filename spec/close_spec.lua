-- Closing streams loses nothing that write accepted; aborting drops it on
-- purpose; several readers of one stream all see its bytes.
local loom = require "loom"
local helper = require "helper"
local run = helper.run

local MB = 1024 * 1024

-- Reads everything from s, slowly at first (a peer that falls behind).
local function slow_read_all(s, pause)
  loom.sleep(pause)
  local parts = {}
  while true do
    local d = s:read(16384)
    if not d then break end
    parts[#parts + 1] = d
    if #parts % 16 == 0 then loom.sleep(0.001) end
  end
  return table.concat(parts)
end

describe("a graceful close", function()
  it("delivers what write accepted to a child's stdin (process.run input)", function()
    run(function()
      for _, n in ipairs({ 1, 65536, 500000, 3 * MB }) do
        local out, code = loom.process.run { "wc", "-c", input = string.rep("y", n) }
        assert.are.equal(0, code)
        assert.are.equal(n, tonumber(out))
      end
    end, 20)
  end)

  it("delivers what write accepted through spawn + stdin:write + stdin:close", function()
    run(function()
      local p = assert(loom.process.spawn { "wc", "-c", stdin = "pipe", stdout = "pipe" })
      assert(p.stdin:write(string.rep("z", 600000)))
      p.stdin:close()
      assert.are.equal(600000, tonumber(p.stdout:read_all()))
      assert.are.equal(0, p:wait())
      p.stdout:close()
    end)
  end)

  it("flushes a unix.serve handler's last write to a slow client, every byte in order", function()
    run(function()
      local dir = loom.fs.mkdtemp("/tmp/loom-close-XXXXXX")
      local path = dir .. "/s"
      local payload = {}
      for i = 1, 90000 do payload[i] = ("%09d\n"):format(i) end
      payload = table.concat(payload) -- 900 KB, checkable
      local srv = assert(loom.unix.serve(path, function(s) assert(s:write(payload)) end))
      local c = assert(loom.unix.connect(path))
      local got = slow_read_all(c, 0.2)
      assert.are.equal(#payload, #got)
      assert(got == payload, "bytes changed on the way")
      c:close(); srv:close()
      os.remove(path); loom.fs.rmdir(dir)
    end)
  end)

  it("flushes around the write high-water mark, for sizes on both sides of it", function()
    run(function()
      for _, n in ipairs({ MB - 1, MB, MB + 1, 2 * MB + 7 }) do
        local body = string.rep("q", n)
        local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
          local _ <close> = s
          s:write(body)
        end))
        local _, port = srv:address()
        local c = assert(loom.tcp.connect("127.0.0.1", port))
        assert.are.equal(n, #slow_read_all(c, 0.05))
        c:close(); srv:close()
      end
    end, 20)
  end)

  it("makes loom.run wait for the flush of a stream closed as main returns", function()
    local out = helper.lua([[
      local loom = require "loom"
      local path = os.tmpname()
      loom.run(function()
        local p = assert(loom.process.spawn { "sh", "-c", "sleep 0.2; wc -c > " .. path, stdin = "pipe" })
        p.stdin:write(string.rep("w", 2 * 1024 * 1024))
        p.stdin:close()
      end)
      os.execute("sleep 0.3")
      local f = io.open(path); print("child read", f:read("a")); f:close(); os.remove(path)
    ]])
    assert.matches("child read\t2097152", out, 1, true)
  end)

  it("gives up after the linger time on a peer that never reads, and resets it", function()
    run(function()
      local closed_at
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        s:set_linger(0.2)
        s:set_timeout(0.1)
        assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { s:write(string.rep("n", 8 * MB)) })
        closed_at = loom.now()
      end))
      local _, port = srv:address()
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      while not closed_at do loom.sleep(0.01) end
      loom.sleep(0.4) -- past the linger time: the server has given up
      local n, err, code = 0, nil, nil
      while true do
        local d, e, k = c:read()
        if not d then err, code = e, k break end
        n = n + #d
      end
      assert(n < 8 * MB, "a peer that stalled past the linger time still got everything")
      assert.are.equal("ECONNRESET", code, err)
      c:close(); srv:close()
    end)
  end)
end)

describe("stream:abort", function()
  it("drops queued bytes and resets the peer; close after it is harmless", function()
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        s:read_line() -- the client is connected and listening
        s:write(string.rep("a", 4 * MB))
        s:abort()
        assert.are.same({ nil, "closed", "ECLOSED" }, { s:write("x") })
        s:close()
      end))
      local _, port = srv:address()
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      c:write("go\n")
      loom.sleep(0.1)
      local n, code = 0, nil
      while true do
        local d, _, k = c:read()
        if not d then code = k break end
        n = n + #d
      end
      assert(n < 4 * MB)
      assert.are.equal("ECONNRESET", code)
      c:close(); srv:close()
    end)
  end)

  it("checks its arguments", function()
    run(function()
      local srv = assert(loom.tcp.listen("127.0.0.1", 0))
      local _, port = srv:address()
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      assert.has_error(function() c:set_linger(0) end)
      assert.has_error(function() c:set_linger("x") end)
      assert.has_error(function() c.abort(nil) end)
      c:close(); srv:close()
    end)
  end)
end)

describe("several readers of one stream", function()
  it("all wake when bytes arrive, each taking its share in turn", function()
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        loom.sleep(0.05)
        s:write("0123456789")
        s:read_all()
      end))
      local _, port = srv:address()
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      local got, order = {}, {}
      local tasks = {}
      for i = 1, 3 do
        tasks[i] = loom.spawn(function()
          got[i] = c:read(1)
          order[#order + 1] = i
        end)
      end
      local ok = loom.timeout(2, loom.gather, tasks[1], tasks[2], tasks[3])
      assert.is_true(ok, "a reader was left asleep beside buffered bytes")
      assert.are.same({ "0", "1", "2" }, got)
      assert.are.same({ 1, 2, 3 }, order)
      assert.are.equal("3456789", c:read_exactly(7))
      c:close(); srv:close()
    end)
  end)

  it("a reader still short of its want waits while another takes what fits", function()
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        s:write("ab")
        loom.sleep(0.05)
        s:write("cdef\n")
        s:read_all()
      end))
      local _, port = srv:address()
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      local line = loom.spawn(function() return c:read_line() end)
      local byte = loom.spawn(function() return c:read(1) end)
      assert.are.equal("a", byte:await())
      assert.are.equal("bcdef", line:await())
      c:close(); srv:close()
    end)
  end)
end)
