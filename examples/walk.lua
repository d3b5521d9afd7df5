-- Walks a directory tree concurrently (directory listings and stats in
-- parallel, at most 16 file operations at a time through a semaphore) and
-- reports the ten largest files and the total size.
-- usage: lua5.4 examples/walk.lua [directory]
local loom = require "loom"
local fs = loom.fs

local root = arg[1] or "."

loom.run(function()
  local t0 = loom.now()
  local limit = loom.semaphore(16)
  local files, total, dirs, skipped = {}, 0, 0, 0

  local function list(dir)
    local _ <close> = limit:acquire()
    local ok, entries = pcall(function()
      local out = {}
      for name, kind in fs.dir(dir) do out[#out + 1] = { name, kind } end
      return out
    end)
    if not ok then skipped = skipped + 1; return {} end
    return entries
  end

  local function measure(path)
    local _ <close> = limit:acquire()
    local st = fs.lstat(path)
    if st then
      files[#files + 1] = { path = path, size = st.size }
      total = total + st.size
    end
  end

  local function walk(g, dir)
    dirs = dirs + 1
    for _, e in ipairs(list(dir)) do
      local path = dir .. "/" .. e[1]
      if e[2] == "directory" then
        g:spawn(walk, g, path)
      elseif e[2] == "file" then
        g:spawn(measure, path)
      end
    end
  end

  loom.group(function(g) walk(g, root) end)

  table.sort(files, function(a, b) return a.size > b.size or (a.size == b.size and a.path < b.path) end)
  print(string.format("%d files in %d directories, %d bytes in total (%.3fs)%s", #files, dirs, total,
    loom.now() - t0, skipped > 0 and string.format(", %d unreadable", skipped) or ""))
  for i = 1, math.min(10, #files) do
    print(string.format("%12d  %s", files[i].size, files[i].path))
  end
end)
