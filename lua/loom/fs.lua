--- loom.fs: files and paths without blocking the loop.
-- Every operation runs in libuv's thread pool; a task doing file work never
-- stalls the others. The primitives are in C (src/fs.c, src/fswatch.c);
-- this module adds the whole-file helpers. Failures return
-- `nil, "<path>: <message>", "<CODE>"` as io does (CODE is libuv's name:
-- "ENOENT", "EACCES", "EISDIR" ...); misuse raises. Every function here may
-- block and needs a task.
-- @module loom.fs
local core = require "loom.core"
local P = core._fs

local fs = {}

--- Opens a file. Blocks.
-- @function open
-- @tparam string path
-- @tparam[opt="r"] string mode as io.open's: "r", "w", "a", "r+", "w+", "a+", with an optional "b"
-- @tparam[opt] integer perm for a new file (default 0666, minus the umask)
-- @return a File, or nil, "path: message", code ("ENOENT", "EACCES" ...)
-- @usage local f <close> = assert(loom.fs.open("data.csv"))
-- for line in f:lines() do handle(line) end
fs.open = P.open

--- Facts about a path. Blocks.
-- @function stat
-- @tparam string path
-- @return a table: `size`, `type` ("file", "directory", "link", "fifo",
-- "socket", "char", "block", "unknown"), `mode` (permission bits), `mtime`,
-- `atime`, `ctime`, `birthtime` (seconds), `nlink`, `uid`, `gid`, `ino`,
-- `dev`, `blocks`, `blksize`; or nil, msg, code
-- @usage local st = loom.fs.stat(path); if st and st.type == "file" then print(st.size) end
fs.stat = P.stat
--- As `stat`, but a final symbolic link is described, not followed. Blocks.
-- @function lstat
-- @tparam string path
-- @return a table as stat's, or nil, msg, code
-- @usage if loom.fs.lstat(p).type == "link" then print(loom.fs.readlink(p)) end
fs.lstat = P.lstat
--- Removes an empty directory. Blocks.
-- @function rmdir
-- @tparam string path
-- @return true, or nil, msg, code ("ENOTEMPTY" ...)
-- @usage assert(loom.fs.rmdir(dir))
fs.rmdir = P.rmdir
--- Renames (moves) a path, replacing `to` if it exists. Blocks.
-- @function rename
-- @tparam string from
-- @tparam string to
-- @return true, or nil, msg, code
-- @usage assert(loom.fs.rename("out.tmp", "out.json"))
fs.rename = P.rename
--- Creates a symbolic link at `path` pointing to `target`. Blocks.
-- @function symlink
-- @tparam string target
-- @tparam string path
-- @return true, or nil, msg, code
-- @usage loom.fs.symlink("releases/v2", "current")
fs.symlink = P.symlink
--- The target of a symbolic link. Blocks.
-- @function readlink
-- @tparam string path
-- @return a string, or nil, msg, code
-- @usage print(loom.fs.readlink("current"))
fs.readlink = P.readlink
--- The canonical absolute path (links resolved). Blocks.
-- @function realpath
-- @tparam string path
-- @return a string, or nil, msg, code
-- @usage print(loom.fs.realpath("."))
fs.realpath = P.realpath
--- Sets the permission bits. Blocks.
-- @function chmod
-- @tparam string path
-- @tparam integer mode e.g. 0x1ed for octal 755 (or tonumber("755", 8))
-- @return true, or nil, msg, code
-- @usage loom.fs.chmod("run.sh", tonumber("755", 8))
fs.chmod = P.chmod
--- Watches a file or directory: `for name, kind in loom.fs.watch(dir) do`
-- (kind "change" or "rename"); the watcher closes when the loop ends. Each
-- step blocks.
-- @function watch
-- @tparam string path
-- @return the generic-for values (a Watcher first), or nil, msg, code
-- @usage for name, kind in loom.fs.watch("conf") do reload(name) end
fs.watch = P.watch

local function is_dir(path)
  local st = P.stat(path)
  return st ~= nil and st.type == "directory"
end

--- Creates a directory. Blocks.
-- @tparam string path
-- @tparam[opt] table opts `parents = true`: create missing parents too and
-- succeed if it exists already (as `mkdir -p`); `mode` (default 0777)
-- @return true, or nil, msg, code
-- @usage assert(loom.fs.mkdir("out/logs/2026", { parents = true }))
function fs.mkdir(path, opts)
  if type(path) ~= "string" then
    error(("bad argument #1 to 'mkdir' (string expected, got %s)"):format(type(path)), 2)
  end
  opts = opts or {}
  if not opts.parents then return P.mkdir(path, opts.mode) end
  local ok, err, code = P.mkdir(path, opts.mode)
  if ok or (code == "EEXIST" and is_dir(path)) then return true end
  if code ~= "ENOENT" then return nil, err, code end
  local parent = path:match("^(.*[^/])/+[^/]+/*$")
  if not parent then return nil, err, code end
  local pok, perr, pcode = fs.mkdir(parent, opts)
  if not pok then return nil, perr, pcode end
  ok, err, code = P.mkdir(path, opts.mode)
  if ok or (code == "EEXIST" and is_dir(path)) then return true end
  return nil, err, code
end

--- Removes a file or an empty directory (as os.remove). Blocks.
-- @tparam string path
-- @return true, or nil, msg, code
-- @usage loom.fs.remove("out.tmp")
function fs.remove(path)
  local ok, err, code = P.unlink(path)
  if not ok and (code == "EISDIR" or code == "EPERM") and is_dir(path) then return P.rmdir(path) end
  return ok, err, code
end

--- Copies a file. Blocks.
-- @tparam string from
-- @tparam string to
-- @tparam[opt] table opts `exclusive = true`: fail (EEXIST) if `to` exists
-- @return true, or nil, msg, code
-- @usage assert(loom.fs.copy("a.db", "a.db.bak"))
function fs.copy(from, to, opts)
  return P.copyfile(from, to, opts and opts.exclusive)
end

--- Creates a new, unique directory. Blocks.
-- @tparam[opt] string prefix default "$TMPDIR/loom-" (six random characters are added)
-- @return its path, or nil, msg, code
-- @usage local dir = assert(loom.fs.mkdtemp())
function fs.mkdtemp(prefix)
  prefix = prefix or ((os.getenv("TMPDIR") or "/tmp") .. "/loom-")
  return P.mkdtemp(prefix .. "XXXXXX")
end

--- Whether a path exists. Blocks.
-- @tparam string path
-- @return true; false if it does not (ENOENT, ENOTDIR); nil, msg, code for
-- other failures (EACCES ...)
-- @usage if not loom.fs.exists(path) then create(path) end
function fs.exists(path)
  local st, err, code = P.stat(path)
  if st then return true end
  if code == "ENOENT" or code == "ENOTDIR" then return false end
  return nil, err, code
end

--- Iterates over a directory's entries (not "." and ".."). Reading the
-- directory blocks.
-- @tparam string path
-- @return an iterator giving name and type (as stat's)
-- @raise "dir: <path>: <message>" if the directory cannot be read
-- @usage for name, kind in loom.fs.dir(".") do print(name, kind) end
function fs.dir(path)
  local list, err = P.scandir(path)
  if not list then error("dir: " .. err, 2) end
  local i = 0
  return function()
    i = i + 1
    local e = list[i]
    if e then return e.name, e.type end
  end
end

local function with_file(path, mode, fn, fname)
  if core.current() == nil then core._not_in_task("loom.fs." .. fname) end
  local f, err, code = P.open(path, mode)
  if not f then return nil, err, code end
  local r = table.pack(pcall(fn, f))
  f:close()
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

--- The whole content of a file. Blocks.
-- @tparam string path
-- @return a string, or nil, msg, code
-- @usage local text = assert(loom.fs.read_file("config.json"))
function fs.read_file(path)
  return with_file(path, "rb", function(f) return f:read("a") end, "read_file")
end

local function write_all(f, data)
  local ok, err, code = f:write(data)
  if not ok then return nil, err, code end
  return true
end

--- Writes `data` to the file, replacing its content. Blocks.
-- @tparam string path
-- @tparam string data
-- @tparam[opt] table opts `atomic = true`: write a temporary file beside it,
-- sync it and rename it over the path, so readers see the old content or the
-- new, never a mix
-- @return true, or nil, msg, code
-- @usage assert(loom.fs.write_file("state.json", json, { atomic = true }))
function fs.write_file(path, data, opts)
  if type(data) ~= "string" then
    error(("bad argument #2 to 'write_file' (string expected, got %s)"):format(type(data)), 2)
  end
  if not (opts and opts.atomic) then
    return with_file(path, "wb", function(f) return write_all(f, data) end, "write_file")
  end
  local tmp = ("%s.tmp-%d-%06d"):format(path, math.floor(core.now() * 1e6) % 1000000, math.random(0, 999999))
  local ok, err, code = with_file(tmp, "wb", function(f)
    local wok, werr, wcode = write_all(f, data)
    if not wok then return nil, werr, wcode end
    return f:sync()
  end, "write_file")
  if ok then ok, err, code = P.rename(tmp, path) end
  if not ok then P.unlink(tmp) end
  return ok, err, code
end

--- Appends `data` to the file (created if missing). Blocks.
-- @tparam string path
-- @tparam string data
-- @return true, or nil, msg, code
-- @usage loom.fs.append_file("app.log", line .. "\n")
function fs.append_file(path, data)
  if type(data) ~= "string" then
    error(("bad argument #2 to 'append_file' (string expected, got %s)"):format(type(data)), 2)
  end
  return with_file(path, "ab", function(f) return write_all(f, data) end, "append_file")
end

--- Iterates as io's lines: `for line in f:lines() do` (formats as read's,
-- default "l"). Each step blocks.
-- @function File:lines
-- @param ... formats
-- @return an iterator
-- @raise the read's message if a read fails
-- @usage for line in f:lines() do n = n + 1 end
function core._File.__index.lines(file, ...)
  local n, fmts = select("#", ...), { ... }
  if n == 0 then n, fmts = 1, { "l" } end
  return function()
    local v, err = file:read(table.unpack(fmts, 1, n))
    if v == nil and err then error(err, 2) end
    return v
  end
end

return fs
