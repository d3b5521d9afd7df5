-- File benchmarks, loom against the blocking way in the same run.
-- usage: lua5.4 bench/fs.lua read|stat [dir]
--   read: a 256 MiB file read in 64 KiB chunks with io (blocking) and with
--         loom.fs while a ticker task sleeping 1 ms measures its worst lateness.
--   stat: 10,000 files stat'ed one by one in a blocking loop (luv's
--         synchronous fs_stat) and by loom.fs.stat with 64 tasks at a time.
local loom = require "loom"
local fs = loom.fs
local which, dir = arg[1], arg[2] or "/tmp/loom-bench"
local CHUNK, SIZE, NFILES, CONCURRENCY = 65536, 256 * 1024 * 1024, 10000, 64

os.execute("mkdir -p '" .. dir .. "'")

local function prepare_big(path)
  local h = io.open(path, "rb")
  if h and h:seek("end") == SIZE then h:close(); return end
  if h then h:close() end
  h = assert(io.open(path, "wb"))
  local block = string.rep("loom", CHUNK // 4)
  for _ = 1, SIZE // CHUNK do h:write(block) end
  h:close()
end

local function bench_read()
  local path = dir .. "/big.bin"
  prepare_big(path)
  local function blocking()
    local t0, n = loom.now(), 0
    local h = assert(io.open(path, "rb"))
    while true do
      local s = h:read(CHUNK)
      if not s then break end
      n = n + #s
    end
    h:close()
    assert(n == SIZE)
    return loom.now() - t0
  end
  local function with_loom()
    local seconds, worst = 0, 0
    loom.run(function()
      local done = false
      local ticker = loom.spawn(function()
        while not done do
          local t = loom.now()
          loom.sleep(0.001)
          worst = math.max(worst, loom.now() - t - 0.001)
        end
      end)
      local t0, n = loom.now(), 0
      local f = assert(fs.open(path, "rb"))
      while true do
        local s = f:read(CHUNK)
        if not s then break end
        n = n + #s
      end
      f:close()
      assert(n == SIZE)
      seconds = loom.now() - t0
      done = true
      ticker:await()
    end)
    return seconds, worst
  end
  blocking() -- warm the page cache
  local b, l, w = {}, {}, 0
  for i = 1, 3 do
    b[i] = blocking()
    local s, worst = with_loom()
    l[i], w = s, math.max(w, worst)
  end
  table.sort(b); table.sort(l)
  local mb = SIZE / 1048576
  print(string.format("read blocking_MBps=%.0f loom_MBps=%.0f ratio=%.2f ticker_worst_ms=%.2f",
    mb / b[2], mb / l[2], b[2] / l[2], w * 1000))
end

local function prepare_files(sub)
  os.execute("mkdir -p '" .. sub .. "'")
  local h = io.open(sub .. "/" .. NFILES, "rb")
  if h then h:close(); return end
  for i = 1, NFILES do assert(io.open(sub .. "/" .. i, "wb")):close() end
end

local function bench_stat()
  local sub = dir .. "/files"
  prepare_files(sub)
  local ok, uv = pcall(require, "luv")
  local function blocking()
    local t0 = loom.now()
    for i = 1, NFILES do assert(uv.fs_stat(sub .. "/" .. i)) end
    return loom.now() - t0
  end
  local function with_loom()
    local seconds
    loom.run(function()
      local t0 = loom.now()
      local next_i = 0
      local function worker()
        while next_i < NFILES do
          next_i = next_i + 1
          assert(fs.stat(sub .. "/" .. next_i))
        end
      end
      local ts = {}
      for i = 1, CONCURRENCY do ts[i] = loom.spawn(worker) end
      for i = 1, CONCURRENCY do ts[i]:await() end
      seconds = loom.now() - t0
    end)
    return seconds
  end
  local b, l = {}, {}
  for i = 1, 3 do
    b[i] = ok and blocking() or 0 / 0
    l[i] = with_loom()
  end
  table.sort(b); table.sort(l)
  print(string.format("stat files=%d blocking_ms=%.1f loom_ms=%.1f speedup=%.2f", NFILES, b[2] * 1000,
    l[2] * 1000, b[2] / l[2]))
end

if which == "read" then bench_read() elseif which == "stat" then bench_stat()
else error("usage: fs.lua read|stat [dir]") end
