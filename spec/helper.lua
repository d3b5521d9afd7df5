-- Shared test helpers (loaded by busted through .busted, and required by specs).
local loom = require "loom"
local core = require "loom.core"
local async = require "loom.busted"

local helper = {}

--- True under AddressSanitizer (make asan): freed memory is quarantined there,
-- so RSS says nothing about leaks (LeakSanitizer checks them instead).
helper.sanitized = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) ~= nil

--- Runs body(...) as the main task of loom.run through loom.busted (a hard
-- wall-time limit, default 5 s; failures re-raise with the task's traceback;
-- a test that leaves a handle open or a task error unretrieved fails).
-- Returns body's results.
function helper.run(body, limit, ...)
  return async.run(body, { timeout = limit or 5 }, ...)
end

--- Runs body(...) as run does, on the virtual clock: timings of loom's own
-- timers are then exact (helper.near), whatever the machine's load.
function helper.vrun(body, ...)
  return async.run(body, { clock = "virtual" }, ...)
end

--- True when a and b are the same duration (floating point aside).
function helper.near(a, b)
  return math.abs(a - b) < 1e-9
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- Runs a Lua 5.4 script in a child process with loom on its paths; returns
-- its output (stdout and stderr together) and its exit status. `opts.file`
-- runs a script file instead (a shell word list: the file and its arguments),
-- `opts.env` is a "NAME=value ..." prefix.
-- Under ASan the child runs without LeakSanitizer's exit-time check: GCC
-- 12's LeakSanitizer crashes at exit ("Tracer caught signal 11") when it
-- reads the dynamic TLS of a library libpq pulls in, depending on the
-- process's layout; ASan and UBSan still check the child, and this process
-- (where the specs run) keeps the leak check.
local child_env = helper.sanitized and "ASAN_OPTIONS=detect_leaks=0:abort_on_error=1" or ""

function helper.lua(script, opts)
  opts = opts or {}
  local cmd = ("%s %s LUA_PATH=%s LUA_CPATH=%s lua5.4 %s 2>&1"):format(child_env, opts.env or "",
    shell_quote(package.path), shell_quote(package.cpath),
    opts.file or ("-e " .. shell_quote(script)))
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

--- The slack of timing checks (LOOM_TIME_SLACK, default 3): a busy or
-- sanitized machine runs late, never early, so lower bounds stay exact and
-- upper bounds get room.
helper.SLACK = tonumber(os.getenv("LOOM_TIME_SLACK")) or 3

--- An upper bound for a duration expected between lo and hi seconds: lo
-- plus SLACK times the margin. Timings are asserted as `lo <= t < upper(lo, hi)`.
function helper.upper(lo, hi)
  return lo + (hi - lo) * helper.SLACK
end

--- A directory of test certificates (tools/mkcerts.sh: ca, server for
-- localhost and 127.0.0.1, wrong, expired, client, self), made once per run
-- and removed at exit. Returns its path with a trailing slash.
local certs
function helper.certs()
  if certs then return certs end
  local h = io.popen("env -u LD_PRELOAD mktemp -d /tmp/loom-certs-XXXXXX")
  local dir = h:read("l")
  h:close()
  assert(os.execute("env -u LD_PRELOAD bash tools/mkcerts.sh " .. dir), "tools/mkcerts.sh failed")
  certs = dir .. "/"
  helper._certs_guard = setmetatable({}, { __gc = function() os.execute("rm -rf " .. dir) end })
  return certs
end

--- Starts a shell command in the background (outside the sanitizers'
-- preload: peers are not under test); returns its pid. Its output goes to
-- the file `log` (default /dev/null).
function helper.spawn_bg(cmd, log)
  local h = io.popen(("unset LD_PRELOAD; sh -c '%s >%s 2>&1 & echo $!'"):format(cmd:gsub("'", "'\\''"),
    log or "/dev/null"))
  local pid = tonumber(h:read("l"))
  h:close()
  return pid
end

--- A PostgreSQL server of its own (tools/pg-server.sh: initdb into a temp
-- dir, a Unix socket there and 127.0.0.1 on a free port; as root it runs as
-- the system user loom-pg). Returns `{dir, port, conninfo (the socket, user
-- loom), tcp (user loom, password "secret"), super (user postgres),
-- restart(), stop()}`; restart blocks the loop, so call it from
-- loom.thread.run or a process in a task.
function helper.pg_server()
  local h = io.popen("env -u LD_PRELOAD mktemp -d /tmp/loom-pg-XXXXXX")
  local dir = h:read("l")
  h:close()
  h = io.popen("env -u LD_PRELOAD sh tools/pg-server.sh start " .. dir .. " 2>&1")
  local out = h:read("a")
  assert(h:close(), "tools/pg-server.sh failed: " .. out)
  local port = assert(tonumber(out:match(" (%d+)")), out)
  local srv = {
    dir = dir,
    port = port,
    conninfo = ("host=%s port=%d dbname=loom user=loom"):format(dir, port),
    tcp = ("host=127.0.0.1 port=%d dbname=loom user=loom password=secret"):format(port),
    super = ("host=%s port=%d dbname=loom user=postgres"):format(dir, port),
    restart_cmd = "env -u LD_PRELOAD sh tools/pg-server.sh restart " .. dir,
  }
  function srv.stop() os.execute("env -u LD_PRELOAD sh tools/pg-server.sh stop " .. dir) end
  return srv
end

--- An HTTP server on a free port of 127.0.0.1 running handler (or a
-- router); returns it and its base URL.
function helper.http_serve(handler, opts)
  local srv = assert(loom.http.serve("127.0.0.1", 0, handler, opts))
  local _, port = srv:address()
  return srv, "http://127.0.0.1:" .. port
end

--- Closes an HTTP server and the client's idle connections to it.
function helper.http_done(srv)
  loom.http.close_idle()
  srv:close()
end

--- A free TCP port on 127.0.0.1 (for a peer started in the background).
function helper.free_port()
  local h = io.popen([[env -u LD_PRELOAD python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])']])
  local port = tonumber(h:read("l"))
  h:close()
  return port
end

--- Waits, inside a task, until something accepts on port.
function helper.wait_port(port)
  for _ = 1, 200 do
    local s = loom.tcp.connect("127.0.0.1", port)
    if s then
      s:close()
      return
    end
    loom.sleep(0.02)
  end
  error("nothing listens on port " .. port)
end

--- An nginx of its own (one worker, a temp dir): `files` (name -> content)
-- are served from its root, `server(port, root)` gives the server block.
-- Returns `{port, stop()}`; wait for it with wait_port inside a task.
function helper.nginx(files, server)
  local port, dir = helper.free_port(), os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir .. "/logs " .. dir .. "/www")
  for name, content in pairs(files) do
    local f = assert(io.open(dir .. "/www/" .. name, "wb"))
    f:write(content)
    f:close()
  end
  local f = assert(io.open(dir .. "/nginx.conf", "w"))
  f:write(("daemon off; worker_processes 1; error_log %s/logs/error.log; pid %s/nginx.pid;\n"):format(dir, dir),
    "events { worker_connections 256; }\n", "http { access_log off; ", server(port, dir .. "/www"), " }\n")
  f:close()
  local pid = helper.spawn_bg(("nginx -p %s -c %s/nginx.conf"):format(dir, dir))
  return {
    port = port,
    stop = function()
      os.execute("kill " .. pid)
      os.execute("rm -rf " .. dir)
    end,
  }
end

--- Seconds taken by fn(...).
function helper.elapsed(fn, ...)
  local t0 = loom.now()
  fn(...)
  return loom.now() - t0
end

return helper
