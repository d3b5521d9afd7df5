local loom = require "loom"
local helper = require "helper"
local fs = loom.fs
local run = helper.run

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p '" .. d .. "'"))
  return d
end

local function rmtree(d) os.execute("rm -rf '" .. d .. "'") end

-- Open descriptors of this process (the shell's parent).
local function open_fds()
  local h = io.popen("ls /proc/$PPID/fd | wc -l")
  local n = tonumber(h:read("a"))
  h:close()
  return n
end

describe("loom.fs files behave as io", function()
  local d
  before_each(function() d = tmpdir() end)
  after_each(function() rmtree(d) end)

  local content = "first line\nsecond line\r\n  42  -3.5e2 0x10 nope\n\nlast without newline"

  it("reads every format as io does", function()
    local path = d .. "/f.txt"
    local h = assert(io.open(path, "wb")); h:write(content); h:close()
    local sequences = {
      { "l", "L", "n", "n", "n", "n", "l", "l", "l", "l" },
      { 5, 0, 100, 0, 3 },
      { "a", "a", "l", 0 },
      { "L", "L", "L", "L", "L", "L" },
      { "n" },
    }
    run(function()
      for _, seq in ipairs(sequences) do
        local ioh = assert(io.open(path, "rb"))
        local f = assert(fs.open(path, "rb"))
        for i, fmt in ipairs(seq) do
          local expected = table.pack(ioh:read(fmt))
          local got = table.pack(f:read(fmt))
          assert.are.same(expected, got, ("format %s (#%d)"):format(tostring(fmt), i))
        end
        assert.are.same(table.pack(ioh:read("l", "n", 2)), table.pack(f:read("l", "n", 2)))
        ioh:close()
        f:close()
      end
    end)
  end)

  it("reads lines like io.lines, long lines and empty files included", function()
    local long = string.rep("x", 700000)
    local path = d .. "/lines.txt"
    local h = assert(io.open(path, "wb")); h:write("a\n\n" .. long .. "\nb"); h:close()
    local empty = d .. "/empty"
    assert(io.open(empty, "wb")):close()
    run(function()
      local expected, got = {}, {}
      for l in io.lines(path) do expected[#expected + 1] = l end
      for l in assert(fs.open(path)):lines() do got[#got + 1] = l end
      assert.are.same(expected, got)
      local f = assert(fs.open(empty))
      assert.is_nil(f:read("l"))
      assert.are.equal("", f:read("a"))
      assert.is_nil(f:read(1))
      f:close()
      assert.are.equal("", fs.read_file(empty))
    end)
  end)

  it("writes, seeks and appends as io does in every mode", function()
    run(function()
      for _, mode in ipairs({ "w", "w+", "r+", "a", "a+" }) do
        local ipath, lpath = d .. "/io-" .. mode, d .. "/loom-" .. mode
        for _, p in ipairs({ ipath, lpath }) do
          local h = assert(io.open(p, "wb")); h:write("0123456789"); h:close()
        end
        local ioh = assert(io.open(ipath, mode))
        local f = assert(fs.open(lpath, mode))
        local steps = {
          { "write", "abc" }, { "seek", "cur" }, { "seek", "set", 2 }, { "write", "XY" },
          { "seek", "cur", -1 }, { "seek", "end" }, { "write", "tail" }, { "seek", "end", -3 },
          { "seek", "set" },
        }
        if mode ~= "w" and mode ~= "a" then
          steps[#steps + 1] = { "read", "a" }
        end
        for _, step in ipairs(steps) do
          local e = table.pack(ioh[step[1]](ioh, table.unpack(step, 2)))
          local g = table.pack(f[step[1]](f, table.unpack(step, 2)))
          if e[1] == ioh then e[1] = "file" end
          if g[1] == f then g[1] = "file" end
          assert.are.same(e, g, mode .. " " .. table.concat(step, " "))
        end
        ioh:close()
        f:close()
        local a, b = assert(io.open(ipath, "rb")), assert(io.open(lpath, "rb"))
        assert.are.equal(a:read("a"), b:read("a"), mode)
        a:close(); b:close()
      end
    end)
  end)

  it("reads multi-block files through the read-ahead exactly as io does", function()
    local path = d .. "/multi.txt"
    local h = assert(io.open(path, "wb"))
    local parts = {}
    for i = 1, 30000 do parts[#parts + 1] = ("line %d %s\n"):format(i, ("x"):rep(i % 97)) end
    parts[15000] = ("L"):rep(200000) .. "\n" -- longer than the room, near a block boundary
    h:write(table.concat(parts))
    h:close()
    run(function()
      for _, fmt in ipairs({ "L", 65536, 1000 }) do
        local expected, got = {}, {}
        local ioh = assert(io.open(path, "rb"))
        for v in ioh:lines(fmt) do expected[#expected + 1] = v end
        ioh:close()
        local f = assert(fs.open(path, "rb"))
        for v in f:lines(fmt) do got[#got + 1] = v end
        f:close()
        assert.are.equal(#expected, #got)
        assert.is_true(table.concat(expected) == table.concat(got), "content differs for " .. fmt)
      end
      -- seeks back after reads through the read-ahead land on the file's bytes
      local all = assert(io.open(path, "rb")):read("a")
      local s = assert(fs.open(path, "rb"))
      local left = 300000
      while left > 0 do left = left - #assert(s:read(math.min(left, 65536))) end
      for _, at in ipairs({ 1000, 250000, 299990, 0 }) do
        assert.are.equal(at, s:seek("set", at))
        assert.is_true(s:read(1000) == all:sub(at + 1, at + 1000), "after seek to " .. at)
      end
      s:close()
      -- a file closed while its read-ahead is in flight, and one dropped unclosed
      local f = assert(fs.open(path, "rb"))
      assert(f:read(10))
      assert.is_true(f:close())
      local g = assert(fs.open(path, "rb"))
      assert(g:read(10))
      g = nil
      loom.sleep(0.01)
      collectgarbage(); collectgarbage()
    end)
  end)

  it("returns io-style failures with libuv codes", function()
    run(function()
      local f, err, code = fs.open(d .. "/missing.txt")
      assert.is_nil(f)
      assert.are.equal(d .. "/missing.txt: no such file or directory", err)
      assert.are.equal("ENOENT", code)
      local _, _, c2 = fs.open(d, "w")
      assert.are.equal("EISDIR", c2)
      local ro = assert(fs.open(d .. "/ro.txt", "w"))
      ro:close()
      local r = assert(fs.open(d .. "/ro.txt", "r"))
      local ok, _, c3 = r:write("x")
      assert.is_nil(ok)
      assert.are.equal("EBADF", c3)
      r:close()
      assert.has_error(function() r:read() end, "attempt to use a closed file")
      assert.has_error(function() fs.open(d .. "/x", "rw") end, "bad argument #2 to 'open' (invalid mode 'rw')")
      local f2 = assert(fs.open(d .. "/ro.txt"))
      assert.has_error(function() f2:read("x") end)
      f2:close()
    end)
  end)

  it("seeks past 2^31 on a sparse file", function()
    run(function()
      local f = assert(fs.open(d .. "/sparse", "w+"))
      local big = 2 ^ 31 + 12345
      assert.are.equal(math.tointeger(big), f:seek("set", math.tointeger(big)))
      assert(f:write("far"))
      assert.are.equal(math.tointeger(big) + 3, f:seek("end"))
      f:seek("set", math.tointeger(big))
      assert.are.equal("far", f:read(3))
      assert.are.equal(math.tointeger(big) + 3, f:stat().size)
      assert(f:truncate(10))
      assert.are.equal(10, f:stat().size)
      f:close()
    end)
  end)

  it("handles unicode and spaces in paths", function()
    run(function()
      local dir = d .. "/dossier été ✓"
      assert(fs.mkdir(dir))
      local path = dir .. "/fichier à lire.txt"
      assert(fs.write_file(path, "ça va"))
      assert.are.equal("ça va", fs.read_file(path))
      local names = {}
      for name, kind in fs.dir(dir) do names[#names + 1] = name .. ":" .. kind end
      assert.are.same({ "fichier à lire.txt:file" }, names)
    end)
  end)

  it("closing twice is harmless and a file collected unclosed is closed", function()
    run(function()
      local before = open_fds()
      local f = assert(fs.open(d .. "/c.txt", "w"))
      assert.is_true(f:close())
      assert.is_true(f:close())
      for _ = 1, 20 do assert(fs.open(d .. "/c.txt")) end
      assert.is_true(open_fds() >= before + 20)
      collectgarbage(); collectgarbage()
      assert.is_true(open_fds() <= before + 1)
      do local _ <close> = assert(fs.open(d .. "/c.txt")) end
      assert.is_true(open_fds() <= before + 1)
    end)
  end)

  it("a cancelled read or write does not corrupt the file object", function()
    run(function()
      local path = d .. "/big"
      local h = assert(io.open(path, "wb")); h:write(string.rep("0123456789", 200000)); h:close()
      local f = assert(fs.open(path, "r+"))
      for _ = 1, 20 do
        local t = loom.spawn(function() return f:read(300000) end)
        loom.sleep(0)
        t:cancel()
        pcall(t.await, t)
      end
      assert.are.equal("0123456789", f:read(10)) -- nothing consumed by the cancelled reads
      -- a write queued behind another task's read, cancelled before its turn, never happens
      assert.are.equal(100000, f:seek("set", 100000)) -- outside the buffer: the next read goes to the pool
      local reader = loom.spawn(function() return f:read(10) end)
      local queued = loom.spawn(function() return f:write("zzzzz") end)
      loom.sleep(0) -- the reader's request is in flight, the writer waits behind it
      queued:cancel()
      pcall(queued.await, queued)
      assert.are.equal("0123456789", reader:await())
      assert.are.equal(100010, f:seek("cur"))
      f:seek("set", 10)
      -- a write cancelled while in the pool still happens: the position moves past it
      local w = loom.spawn(function() return f:write("ABCDE") end)
      loom.sleep(0)
      w:cancel()
      pcall(w.await, w)
      assert.are.equal(15, f:seek("cur"))
      f:seek("set", 10)
      assert.are.equal("ABCDE56789", f:read(10))
      f:close()
    end)
  end)

  it("a long run of buffered reads lets other tasks run, and loses no data to a cancellation", function()
    local path = d .. "/long"
    local h = assert(io.open(path, "wb")); h:write(string.rep("y", 8 * 1024 * 1024)); h:close()
    run(function()
      local ticks = 0
      local ticker = loom.spawn(function() while true do loom.sleep(0); ticks = ticks + 1 end end)
      local f = assert(fs.open(path))
      local got, calls = 0, 0
      while true do
        local s = f:read(4096)
        if not s then break end
        got, calls = got + #s, calls + 1
      end
      assert.are.equal(8 * 1024 * 1024, got)
      assert.is_true(ticks > 1, ticks) -- the reader let the ticker run between buffered reads
      ticker:cancel()
      -- cancel a reader repeatedly: the bytes it returned plus what is left add up
      f:seek("set")
      local total = 0
      for _ = 1, 50 do
        local reader = loom.spawn(function()
          local n = 0
          while true do
            local s = f:read(65536)
            if not s then return n end
            n = n + #s
            total = total + #s
          end
        end)
        loom.sleep(0)
        reader:cancel()
        pcall(reader.await, reader)
      end
      while true do
        local s = f:read(65536)
        if not s then break end
        total = total + #s
      end
      assert.are.equal(8 * 1024 * 1024, total)
      f:close()
    end)
  end)

  it("serves concurrent operations on one file one at a time, in order", function()
    run(function()
      local f = assert(fs.open(d .. "/shared", "w+"))
      local ts = {}
      for i = 1, 5 do ts[i] = loom.spawn(function() return f:write(tostring(i)) end) end
      for i = 1, 5 do assert(ts[i]:await()) end
      f:seek("set")
      assert.are.equal("12345", f:read("a"))
      f:close()
    end)
  end)

  it("a task cancelled just after the file's turn was handed to it passes the turn on", function()
    run(function()
      local f = assert(fs.open(d .. "/turns", "w+"))
      local ts = {}
      ts[1] = loom.spawn(function()
        f:write("1")
        ts[2]:cancel() -- ts[2] was just handed the turn and has not run yet
      end)
      for i = 2, 4 do ts[i] = loom.spawn(function() return f:write(tostring(i)) end) end
      local ok = loom.timeout(2, function()
        ts[1]:await()
        assert.is_true(loom.is_cancelled(select(2, pcall(ts[2].await, ts[2]))))
        assert(ts[3]:await())
        assert(ts[4]:await())
      end)
      assert.is_true(ok, "the tasks behind a cancelled one lost their turn")
      f:seek("set")
      assert.are.equal("134", f:read("a"))
      f:close()
    end)
  end)
end)

describe("loom.fs paths", function()
  local d
  before_each(function() d = tmpdir() end)
  after_each(function() rmtree(d) end)

  it("stat, lstat, symlink, readlink, realpath, chmod, copy, rename, remove", function()
    run(function()
      local a = d .. "/a.txt"
      assert(fs.write_file(a, "12345"))
      local st = fs.stat(a)
      assert.are.equal(5, st.size)
      assert.are.equal("file", st.type)
      assert.is_true(st.mtime > 0)
      assert(fs.symlink(a, d .. "/link"))
      assert.are.equal("link", fs.lstat(d .. "/link").type)
      assert.are.equal("file", fs.stat(d .. "/link").type)
      assert.are.equal(a, fs.readlink(d .. "/link"))
      assert.are.equal(fs.realpath(a), fs.realpath(d .. "/link"))
      assert(fs.chmod(a, tonumber("600", 8)))
      assert.are.equal(tonumber("600", 8), fs.stat(a).mode)
      assert(fs.copy(a, d .. "/b.txt"))
      assert.are.equal("12345", fs.read_file(d .. "/b.txt"))
      local _, _, code = fs.copy(a, d .. "/b.txt", { exclusive = true })
      assert.are.equal("EEXIST", code)
      assert(fs.rename(d .. "/b.txt", d .. "/c.txt"))
      assert.is_false(fs.exists(d .. "/b.txt"))
      assert(fs.remove(d .. "/c.txt"))
      assert.is_false(fs.exists(d .. "/c.txt"))
      assert(fs.mkdir(d .. "/sub"))
      assert(fs.remove(d .. "/sub"))
      assert.is_false(fs.exists(d .. "/sub"))
      local _, _, c2 = fs.rmdir(d .. "/nope")
      assert.are.equal("ENOENT", c2)
    end)
  end)

  it("mkdir with parents, mkdtemp, dir", function()
    run(function()
      assert(fs.mkdir(d .. "/x/y/z", { parents = true }))
      assert(fs.mkdir(d .. "/x/y/z", { parents = true })) -- exists: fine
      local _, _, code = fs.mkdir(d .. "/x")
      assert.are.equal("EEXIST", code)
      local _, _, c2 = fs.mkdir(d .. "/q/r")
      assert.are.equal("ENOENT", c2)
      local t = assert(fs.mkdtemp(d .. "/tmp-"))
      assert.matches("/tmp%-......$", t)
      assert.are.equal("directory", fs.stat(t).type)
      local seen = {}
      for name, kind in fs.dir(d) do seen[name] = kind end
      assert.are.same({ x = "directory", [t:match("[^/]+$")] = "directory" }, seen)
      assert.has_error(function() fs.dir(d .. "/none") end)
    end)
  end)

  it("write_file atomically replaces the content", function()
    run(function()
      local p = d .. "/config"
      assert(fs.write_file(p, "old"))
      assert(fs.write_file(p, "new content", { atomic = true }))
      assert.are.equal("new content", fs.read_file(p))
      local names = {}
      for name in fs.dir(d) do names[#names + 1] = name end
      assert.are.same({ "config" }, names) -- no temporary file left
      assert(fs.append_file(p, "!"))
      assert.are.equal("new content!", fs.read_file(p))
      local _, _, code = fs.write_file(d .. "/no/such/dir/f", "x", { atomic = true })
      assert.are.equal("ENOENT", code)
    end)
  end)

  it("watch reports a write and a rename", function()
    run(function()
      local events = {}
      local watcher = loom.spawn(function()
        for name, kind in fs.watch(d) do
          events[#events + 1] = kind .. ":" .. tostring(name)
          if kind == "rename" and name == "moved.txt" then break end
        end
      end)
      loom.sleep(0.02)
      assert(fs.write_file(d .. "/w.txt", "data"))
      loom.sleep(0.02)
      assert(fs.rename(d .. "/w.txt", d .. "/moved.txt"))
      watcher:await()
      local joined = table.concat(events, " ")
      assert.matches("change:w.txt", joined, 1, true)
      assert.matches("rename:moved.txt", joined, 1, true)
    end, 3)
  end)

  it("operations need a task and check their arguments", function()
    assert.has_error(function() fs.stat("/") end, "loom.fs.stat: not inside a task (wrap the program in loom.run)")
    run(function()
      assert.has_error(function() fs.stat(nil) end, "bad argument #1 to 'stat' (string expected, got nil)")
      assert.has_error(function() fs.write_file("x", 5) end, "bad argument #2 to 'write_file' (string expected, got number)")
    end)
  end)
end)
