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

--- Opens a file: `mode` as io.open's ("r", "w", "a", "r+", "w+", "a+", with
-- an optional "b"); `perm` for a new file (default 0666, minus umask).
-- Returns a file: `read`, `write`, `seek`, `lines`, `sync`, `truncate`,
-- `stat`, `close` (and `<close>`).
-- @function open
fs.open = P.open

--- A table about the path: `size`, `type` ("file", "directory", "link",
-- "fifo", "socket", "char", "block", "unknown"), `mode` (permission bits),
-- `mtime`, `atime`, `ctime`, `birthtime` (seconds), `nlink`, `uid`, `gid`,
-- `ino`, `dev`, `blocks`, `blksize`. `lstat` does not follow a final link.
-- @function stat
fs.stat = P.stat
--- @function lstat
fs.lstat = P.lstat
--- Removes an empty directory. @function rmdir
fs.rmdir = P.rmdir
--- Renames (moves) a path, replacing `to` if it exists. @function rename
fs.rename = P.rename
--- Creates a symbolic link at `path` pointing to `target`. @function symlink
fs.symlink = P.symlink
--- The target of a symbolic link. @function readlink
fs.readlink = P.readlink
--- The canonical absolute path. @function realpath
fs.realpath = P.realpath
--- Sets the permission bits (a number, e.g. 0x1ed for octal 755). @function chmod
fs.chmod = P.chmod
--- Iterates over change events: `for name, kind in fs.watch(dir) do ... end`
-- (kind "change" or "rename"); the watcher closes when the loop ends. Needs
-- a running loop; nil, msg, code if the path cannot be watched.
-- @function watch
fs.watch = P.watch

local function is_dir(path)
  local st = P.stat(path)
  return st ~= nil and st.type == "directory"
end

--- Creates a directory. `opts.parents`: create missing parents too, and
-- succeed if it exists already (as `mkdir -p`); `opts.mode` (default 0777).
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

--- Removes a file or an empty directory (as os.remove).
function fs.remove(path)
  local ok, err, code = P.unlink(path)
  if not ok and (code == "EISDIR" or code == "EPERM") and is_dir(path) then return P.rmdir(path) end
  return ok, err, code
end

--- Copies a file; with `opts.exclusive`, fails if `to` exists.
function fs.copy(from, to, opts)
  return P.copyfile(from, to, opts and opts.exclusive)
end

--- Creates a new unique directory; `prefix` defaults to "$TMPDIR/loom-"
-- (six random characters are added). Returns its path.
function fs.mkdtemp(prefix)
  prefix = prefix or ((os.getenv("TMPDIR") or "/tmp") .. "/loom-")
  return P.mkdtemp(prefix .. "XXXXXX")
end

--- True if the path exists, false if it does not (ENOENT, ENOTDIR);
-- nil, msg, code for other failures (e.g. EACCES).
function fs.exists(path)
  local st, err, code = P.stat(path)
  if st then return true end
  if code == "ENOENT" or code == "ENOTDIR" then return false end
  return nil, err, code
end

--- Iterates over a directory's entries as `name, type` (type as in stat;
-- "." and ".." are not listed). Raises if the directory cannot be read.
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

local function with_file(path, mode, fn)
  local f, err, code = P.open(path, mode)
  if not f then return nil, err, code end
  local r = table.pack(pcall(fn, f))
  f:close()
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

--- The whole content of a file as a string, or nil, msg, code.
function fs.read_file(path)
  return with_file(path, "rb", function(f) return f:read("a") end)
end

local function write_all(f, data)
  local ok, err, code = f:write(data)
  if not ok then return nil, err, code end
  return true
end

--- Writes `data` to the file, replacing it. With `opts.atomic`, writes a
-- temporary file beside it, syncs it, and renames it over the path: readers
-- see the old content or the new, never a mix. True, or nil, msg, code.
function fs.write_file(path, data, opts)
  if type(data) ~= "string" then
    error(("bad argument #2 to 'write_file' (string expected, got %s)"):format(type(data)), 2)
  end
  if not (opts and opts.atomic) then
    return with_file(path, "wb", function(f) return write_all(f, data) end)
  end
  local tmp = ("%s.tmp-%d-%06d"):format(path, math.floor(core.now() * 1e6) % 1000000, math.random(0, 999999))
  local ok, err, code = with_file(tmp, "wb", function(f)
    local wok, werr, wcode = write_all(f, data)
    if not wok then return nil, werr, wcode end
    return f:sync()
  end)
  if ok then ok, err, code = P.rename(tmp, path) end
  if not ok then P.unlink(tmp) end
  return ok, err, code
end

--- Appends `data` to the file (created if missing). True, or nil, msg, code.
function fs.append_file(path, data)
  if type(data) ~= "string" then
    error(("bad argument #2 to 'append_file' (string expected, got %s)"):format(type(data)), 2)
  end
  return with_file(path, "ab", function(f) return write_all(f, data) end)
end

--- file:lines(...): iterates as io's lines: `for line in f:lines() do`
-- (formats as read's, default "l"); raises if a read fails.
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
