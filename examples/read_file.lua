-- Reading a file without blocking the loop: loom.fs does the reads on the
-- thread pool, so a ticker keeps its pace while a large file is read line by
-- line. (A file is written first so the example is self-contained.)
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1
local LINES = math.floor(300000 * SCALE)

loom.run(function()
  local dir = assert(loom.fs.mkdtemp("/tmp/loom-read-XXXXXX"))
  local path = dir .. "/data.csv"
  local rows = {}
  for i = 1, LINES do rows[i] = ("%d,item-%d,%d\n"):format(i, i, i * 7 % 1000) end
  assert(loom.fs.write_file(path, table.concat(rows)))

  local t0 = loom.now()
  local done, ticks, worst, last = false, 0, 0, loom.now()
  local ticker = loom.spawn(function()
    while not done do
      loom.sleep(0.01)
      local now = loom.now()
      worst = math.max(worst, now - last - 0.01)
      last, ticks = now, ticks + 1
    end
  end)

  local f <close> = assert(loom.fs.open(path))
  local count, total = 0, 0
  for line in f:lines() do
    count = count + 1
    total = total + tonumber(line:match("(%d+)$"))
  end
  done = true
  ticker:await()
  local size = assert(loom.fs.stat(path)).size
  print(string.format("%5.2fs  read %d lines (%.1f MB), sum of the last column %d", loom.now() - t0, count,
    size / 1e6, total))
  print(string.format("        a 10 ms ticker ticked %d times meanwhile, at most %.1f ms late", ticks, worst * 1000))
  assert(loom.fs.remove(path))
  assert(loom.fs.rmdir(dir))
end)
