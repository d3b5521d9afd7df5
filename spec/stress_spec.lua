-- The stress tier: many iterations, several tasks on one object, a close or
-- a cancellation at an unlucky moment, a slow peer. A few seconds here;
-- `make stress` runs it with LOOM_STRESS=10 (and under ASan + UBSan).
local loom = require "loom"
local helper = require "helper"
local run = helper.run

local SCALE = tonumber(os.getenv("LOOM_STRESS")) or 1
local MB = 1024 * 1024

describe("stress", function()
  it("short sleeps and timeouts keep firing with listeners and connections open", function()
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s) s:read_all() end))
      local _, port = srv:address()
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      local n = 2000 * SCALE
      local done = 0
      local g = loom.group()
      for k = 1, 4 do -- several sleepers at once, with deadlines that interleave
        g:spawn(function()
          for i = 1, n // 4 do
            if i % 2 == 0 then
              loom.sleep(0.0001 * k)
            else
              assert.is_false((loom.timeout(0.0001 * k, loom.sleep, 0.01)))
            end
            done = done + 1
          end
        end)
      end
      g:close()
      assert.are.equal(n // 4 * 4, done)
      c:close(); srv:close()
    end, 30 * SCALE)
  end)

  it("closes streams of sizes around the write high-water mark to slow readers, every byte delivered", function()
    run(function()
      local sizes = { 1, 4095, 65536, MB - 1, MB, MB + 1, MB + 65536, 3 * MB }
      for round = 1, SCALE do
        for _, n in ipairs(sizes) do
          local fill = string.char(65 + (n + round) % 26)
          local body = fill:rep(n - 1) .. "$"
          local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
            -- in two writes, the second one queued behind the first
            s:write(body:sub(1, n // 2))
            s:write(body:sub(n // 2 + 1))
          end))
          local _, port = srv:address()
          local c = assert(loom.tcp.connect("127.0.0.1", port))
          loom.sleep(0.01)
          local got = {}
          while true do
            local d = c:read(7919) -- a prime: reads never line up with writes
            if not d then break end
            got[#got + 1] = d
            if #got % 64 == 0 then loom.sleep(0.001) end
          end
          got = table.concat(got)
          assert.are.equal(n, #got)
          assert(got == body, "bytes changed on the way")
          c:close(); srv:close()
        end
      end
    end, 60 * SCALE)
  end)

  it("cancelling thousands of tasks at random points loses no permit, lock, item, file turn or handle", function()
    run(function()
      math.randomseed(42)
      local sem = loom.semaphore(3)
      local lock = loom.lock()
      local q = loom.queue(5)
      local ev = loom.event()
      local dir = loom.fs.mkdtemp("/tmp/loom-stress-XXXXXX")
      local f = assert(loom.fs.open(dir .. "/f", "w+"))
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        while true do
          local line = s:read_line()
          if not line then return end
          s:write(line, "\n")
        end
      end))
      local _, port = srv:address()
      local conn = assert(loom.tcp.connect("127.0.0.1", port))
      local conn_lock = loom.lock()
      local ops = {
        function() local _ <close> = sem:acquire(); loom.sleep(0.0005) end,
        function() local _ <close> = lock:acquire(); loom.sleep(0.0005) end,
        function() q:put(1) end,
        function() q:get() end,
        function() ev:wait() end,
        function() f:write("x") end,
        function() f:seek("set"); f:read(1) end,
        function()
          local _ <close> = conn_lock:acquire()
          conn:write("ping\n")
          assert.are.equal("ping", conn:read_line())
        end,
        function() loom.thread.run(function() local x = 0; for i = 1, 1000 do x = x + i end; return x end) end,
        function() loom.sleep(0.001) end,
      }
      local n = 2000 * SCALE
      for i = 1, n do
        local op = ops[math.random(#ops)]
        local t = loom.spawn(op)
        if math.random() < 0.5 then
          for _ = 1, math.random(0, 2) do loom.sleep(0) end
          t:cancel()
        end
        if i % 50 == 0 then loom.sleep(0.002) end
      end
      ev:set()
      -- drain the queue so blocked putters finish, then check every resource came back
      local t0 = loom.now()
      while loom.now() - t0 < 2 do
        while not q:empty() do q:get_nowait() end
        loom.sleep(0.01)
        if #loom.tasks() <= 3 then break end -- main, the server's acceptor and its connection
      end
      while not q:empty() do q:get_nowait() end
      assert.are.equal(3, sem:value(), "a permit was lost")
      assert.is_false(lock:locked(), "the lock was lost")
      assert.is_false(conn_lock:locked())
      -- the file still takes turns, the connection still answers in order
      assert(loom.timeout(2, function() f:seek("set"); f:write("ok") end))
      local _ <close> = conn_lock:acquire()
      conn:write("last\n")
      -- a task cancelled between its write and its read left its echo behind
      local line = conn:read_line()
      while line == "ping" do line = conn:read_line() end
      assert.are.equal("last", line)
      f:close()
      conn:close(); srv:close()
      os.remove(dir .. "/f"); loom.fs.rmdir(dir)
    end, 60 * SCALE)
  end)

  it("several readers and writers share one stream without losing or duplicating a byte", function()
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        while true do
          local d = s:read()
          if not d then return end
          s:write(d)
        end
      end))
      local _, port = srv:address()
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      local per_writer, writers, readers = 200 * SCALE, 4, 3
      local total = per_writer * writers * 8 -- records of 8 bytes
      local bytes = 0
      local g = loom.group()
      for w = 1, writers do
        g:spawn(function()
          for i = 1, per_writer do assert(c:write(("%d%06d\n"):format(w, i))) end
        end)
      end
      local got = {}
      for r = 1, readers do
        got[r] = {}
        g:spawn(function()
          while bytes < total do
            local d = c:read(8)
            if not d then break end
            bytes = bytes + #d
            got[r][#got[r] + 1] = d
          end
        end)
      end
      assert(loom.timeout(20, function() while bytes < total do loom.sleep(0.005) end end))
      c:shutdown()
      g:close()
      -- the pieces, put back in stream order by nobody: count the records
      local all = {}
      for r = 1, readers do all[#all + 1] = table.concat(got[r]) end
      assert.are.equal(total, bytes)
      local count = 0
      for r = 1, readers do
        for _ in all[r]:gmatch("\n") do count = count + 1 end
      end
      assert.are.equal(per_writer * writers, count)
      c:close(); srv:close()
    end, 60 * SCALE)
  end)

  it("processes whose workers loaded C modules exit, every time", function()
    for _ = 1, 3 * SCALE do
      local out, code = helper.lua([[
        local loom = require "loom"
        loom.run(function()
          local g = loom.group()
          for i = 1, 8 do
            g:spawn(loom.thread.run, function(n) return require("cjson").encode({ n }) end, i)
          end
          g:close()
        end)
        print("exited")
      ]], { env = "timeout 20 env" })
      assert.are.equal(0, code, out)
      assert.matches("exited", out, 1, true)
    end
  end)
end)
