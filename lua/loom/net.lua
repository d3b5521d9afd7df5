--- loom.tcp, loom.unix, loom.dns: streams over TCP and Unix sockets.
-- The streams and servers are C objects (src/stream.c, src/tcp.c); this
-- module resolves names, tries addresses in turn, applies options and runs
-- servers. Operational failures return `nil, msg, code` with libuv's code
-- names ("ECONNREFUSED", "ETIMEDOUT", "EAI_NONAME" ...); misuse raises.
-- @module loom.net
local core = require "loom.core"

local tcp, unix, dns = {}, {}, {}

local args = require "loom.args"
local check_type, check_port = args.type, args.port

local function is_ip(host)
  return host:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:find(":", 1, true) ~= nil
end

--- The addresses of a host name, resolved in the thread pool. Blocks.
-- @function dns.resolve
-- @tparam string host a name or an address
-- @return a list of addresses (IPv4 and IPv6 strings, no duplicates), or nil,
-- msg, code ("EAI_NONAME" ...)
-- @usage local addrs = assert(loom.dns.resolve("localhost"))
function dns.resolve(host)
  check_type(host, "string", 1, "resolve")
  if is_ip(host) then return { host } end
  local list, err, code = core._getaddrinfo(host)
  if not list then return nil, err, code end
  local seen, out = {}, {}
  for _, a in ipairs(list) do
    if not seen[a] then seen[a] = true; out[#out + 1] = a end
  end
  return out
end

-- The host name each connected stream was opened with (tls.wrap checks the
-- certificate against it).
local hosts = setmetatable({}, { __mode = "k" })

local function remaining(deadline)
  return math.max(0, deadline - core.now())
end

--- Connects to host:port; host names resolve without blocking the loop and
-- each address (IPv4, IPv6) is tried in turn. Blocks.
-- @function tcp.connect
-- @tparam string host
-- @tparam integer port
-- @tparam[opt] table opts `timeout` (seconds, for the whole attempt),
-- `nodelay` (default true), `keepalive` (seconds, or a boolean)
-- @return a Stream, or nil, msg, code ("ECONNREFUSED", "ETIMEDOUT", "EAI_NONAME" ...)
-- @usage local s <close> = assert(loom.tcp.connect("example.com", 80, { timeout = 5 }))
function tcp.connect(host, port, opts)
  check_type(host, "string", 1, "connect")
  check_port(port, 2, "connect")
  if opts ~= nil then check_type(opts, "table", 3, "connect") end
  opts = opts or {}
  local deadline = opts.timeout and core.now() + opts.timeout
  local function within(fn, ...)
    if not deadline then return true, fn(...) end
    return core.timeout(remaining(deadline), fn, ...)
  end
  local ok, addrs, err, code = within(dns.resolve, host)
  if not ok then return nil, host .. ": timeout", "ETIMEDOUT" end
  if not addrs then return nil, err, code end
  for _, ip in ipairs(addrs) do
    local done, st, e, c = within(core._tcp_connect, ip, port)
    if not done then return nil, ("%s:%d: timeout"):format(host, port), "ETIMEDOUT" end
    if st then
      core._tcp_options(st, opts.nodelay ~= false, opts.keepalive)
      hosts[st] = host
      return st
    end
    err, code = e, c
  end
  return nil, ("%s:%d: %s"):format(host, port, err), code
end

--- Listens on host:port. May block (to resolve a host name).
-- @function tcp.listen
-- @tparam string host
-- @tparam integer port 0 picks a free one (see `Server:address`)
-- @tparam[opt] table opts `backlog` (default 511), `reuseport` (several
-- processes may listen on the port; the kernel spreads connections)
-- @return a Server, or nil, msg, code ("EADDRINUSE" ...)
-- @usage local server = assert(loom.tcp.listen("127.0.0.1", 0))
function tcp.listen(host, port, opts)
  check_type(host, "string", 1, "listen")
  check_port(port, 2, "listen")
  if opts ~= nil then check_type(opts, "table", 3, "listen") end
  opts = opts or {}
  if opts._listen_fd then return core._tcp_listen(nil, nil, opts.backlog, true, opts._listen_fd) end
  local addrs, err, code = dns.resolve(host)
  if not addrs then return nil, err, code end
  return core._tcp_listen(addrs[1], port, opts.backlog, opts.reuseport)
end

local function stderr_log(msg)
  io.stderr:write("loom: ", msg, "\n")
end

local DEFAULT_MAX_CONNECTIONS = 10000

-- The message handler of server handlers: a string error gains the
-- handler's traceback, without the frames below the handler (loom's
-- acceptor and serving loop: not where the user's mistake is). Other error
-- values (a cancellation) pass unchanged.
local function handler_traceback(e, level)
  if type(e) ~= "string" then return e end
  local tb = debug.traceback(e, (level or 1) + 1)
  local cut -- the first of the frames that call handlers
  for _, frame in ipairs({ "in function 'xpcall'", "in method 'serve'", "in function 'pcall'" }) do
    local at = tb:find("\n%s*%[C%]: " .. frame)
    if at and (not cut or at < cut) then cut = at end
  end
  tb = cut and tb:sub(1, cut - 1) or tb
  -- the user's frames only: loom's own (a router's dispatch, middleware
  -- plumbing) are trimmed, unless nothing else is left
  local kept, user = {}, 0
  for line in tb:gmatch("[^\n]+") do
    local library = line:find("/loom/[%w_/]+%.lua:") or line:find("^%s*loom/[%w_/]+%.lua:") or
      line:find("^%s*%(%.%.%.tail calls%.%.%.%)$")
    if not library then
      kept[#kept + 1] = line
      if line:find("^%s+%S+%.lua:%d+:") then user = user + 1 end
    end
  end
  return user > 0 and table.concat(kept, "\n") or tb
end

-- Accepts connections for ever, each handled in its own task (closed after);
-- a handler's error goes to log (default: stderr) with its traceback;
-- running out of descriptors (EMFILE) backs off instead of spinning. At
-- `max` connections it stops accepting (new clients wait in the backlog)
-- after asking `on_full` to free some (loom.http closes idle keep-alive
-- connections). Also loom.http's acceptor.
local function run_server(server, handler, what, log, max, on_full, tls_ctx, hs_timeout)
  log = log or stderr_log
  local slots = core.semaphore(max or DEFAULT_MAX_CONNECTIONS)
  local active, idle = 0, core.event()
  idle:set()
  local function take_slot()
    if not on_full then return slots:acquire() end
    while slots:value() == 0 do -- full: ask for room, again every 50 ms while it lasts
      on_full()
      if core.timeout(0.05, slots.acquire, slots) then return end
    end
    slots:acquire()
  end
  -- runs the handler for one accepted connection (its slot taken)
  local function serve_one(st)
    active = active + 1
    idle:clear()
    core.spawn(function()
      -- a handler that returned has said all it meant to: flush it; one
      -- that failed or was cancelled (or a handshake that did not
      -- complete) may have stopped half-way, and its peer must not take
      -- the truncated bytes for a whole reply
      local clean = false
      local _ <close> = setmetatable({}, { __close = function()
        slots:release()
        if clean then st:close() else st:abort() end
        active = active - 1
        if active == 0 then idle:set() end
      end })
      -- the handler only ever sees a stream whose handshake completed
      if tls_ctx then
        local done, s = core.timeout(hs_timeout or 10, core._tls_wrap, st, tls_ctx, true)
        if not (done and s) then return end
      end
      local ok, e = xpcall(handler, handler_traceback, st)
      clean = ok
      if not ok and not core.is_cancelled(e) then
        log(("%s handler failed: %s"):format(what, tostring(e)))
      end
    end)
  end
  core.spawn(function()
    while true do
      take_slot()
      local st, err, code = server:accept()
      if st then
        serve_one(st)
      else
        slots:release()
        if err == "closed" then return end
        if code ~= "EMFILE" and code ~= "ENFILE" then
          log(("%s accept failed: %s"):format(what, tostring(err)))
        end
        core.sleep(0.05)
      end
    end
  end).name = what .. " acceptor"
  -- Stops accepting gracefully: the connections the kernel already queued
  -- are taken and served first (Linux resets those still queued when a
  -- listening socket closes), then the listener closes.
  local function stop()
    while true do
      local st = server:_accept_now()
      if not st then break end
      take_slot()
      serve_one(st)
    end
    server:close()
  end
  return server, stop, idle
end

-- The TLS context of a server's opts.tls (nil without one).
local function server_tls(opts, fname)
  if opts == nil or opts.tls == nil then return nil end
  local ctx = require("loom.tls")._context_of(opts.tls, 3, fname)
  local t = opts.handshake_timeout
  if t ~= nil and (type(t) ~= "number" or t <= 0) then
    error(("bad argument #3 to '%s' (handshake_timeout must be a positive number)"):format(fname), 3)
  end
  return ctx, t
end

local function check_max(opts, fname)
  local max = opts and opts.max_connections
  if max ~= nil and (math.type(max) ~= "integer" or max < 1) then
    error(("bad argument #3 to '%s' (max_connections must be a positive integer)"):format(fname), 3)
  end
  return max
end

--- Listens on host:port and runs `handler(stream)` in a task per
-- connection; the stream is closed after. A handler's error is logged with
-- its traceback and the server goes on; out of descriptors (EMFILE) it backs
-- off and recovers. May block (to resolve a host name).
-- @function tcp.serve
-- @tparam string host
-- @tparam integer port
-- @tparam function handler given each connection's Stream
-- @tparam[opt] table opts as listen's, and `max_connections` (default
-- 10,000: at that many, accepting pauses and new clients wait in the
-- backlog until a connection ends), `tls` (a loom.tls context or its
-- fields: the handler only ever gets a stream whose handshake completed;
-- a client that fails or stalls past `handshake_timeout`, default 10 s, is
-- dropped), `workers` (a count or "auto": the server runs in that many
-- processes, see loom.workers; this call then supervises them and blocks
-- until they have stopped, returning true or nil, msg) and
-- `shutdown_timeout` (30 s: how long a worker told to stop lets its
-- connections finish)
-- @return the Server (`address`, `close`: stop accepting; handlers running go on), or nil, msg, code
-- @usage loom.tcp.serve("0.0.0.0", 7000, function(s)
--   for line in s:lines() do s:write(line, "\n") end
-- end)
function tcp.serve(host, port, handler, opts)
  check_type(handler, "function", 3, "serve")
  local max = check_max(opts, "serve")
  local ctx, hs = server_tls(opts, "serve")
  local function start(o)
    local server, err, code = tcp.listen(host, port, o)
    if not server then return nil, nil, err, code end
    local _, stop, idle = run_server(server, handler, "tcp server", nil, max, nil, ctx, hs)
    return server, function(timeout)
      stop()
      idle:wait(timeout)
    end
  end
  if opts and opts.workers ~= nil then
    return require("loom.workers")._serve("serve", host, port, opts, start)
  end
  local server, _, err, code = start(opts)
  if not server then return nil, err, code end
  return server
end

--- Connects to the Unix socket at path. Blocks.
-- @function unix.connect
-- @tparam string path
-- @return a Stream, or nil, msg, code
-- @usage local s = assert(loom.unix.connect("/run/app.sock"))
function unix.connect(path)
  check_type(path, "string", 1, "connect")
  return core._pipe_connect(path)
end

--- Listens on a Unix socket at path. Never blocks.
-- @function unix.listen
-- @tparam string path
-- @tparam[opt] table opts `backlog`
-- @return a Server, or nil, msg, code
-- @usage local server = assert(loom.unix.listen("/tmp/app.sock"))
function unix.listen(path, opts)
  check_type(path, "string", 1, "listen")
  return core._pipe_listen(path, opts and opts.backlog)
end

--- As tcp.serve, on a Unix socket at path. Never blocks.
-- @function unix.serve
-- @tparam string path
-- @tparam function handler given each connection's Stream
-- @tparam[opt] table opts `backlog`, `max_connections`, `tls`,
-- `handshake_timeout` (as tcp.serve's)
-- @return the Server, or nil, msg, code
-- @usage loom.unix.serve("/tmp/app.sock", function(s) s:write("hello\n") end)
function unix.serve(path, handler, opts)
  check_type(handler, "function", 2, "serve")
  local max = check_max(opts, "serve")
  local ctx, hs = server_tls(opts, "serve")
  local server, err, code = unix.listen(path, opts)
  if not server then return nil, err, code end
  return (run_server(server, handler, "unix server", nil, max, nil, ctx, hs))
end

local udp = {}

local UDP = core._UDP.__index
local raw_send = UDP.send

--- Sends one datagram; never waits for the network (a host name is
-- resolved first, which blocks).
-- @function UDP:send
-- @tparam string data
-- @tparam string host
-- @tparam integer port
-- @return true, or nil, msg, code
-- @usage sock:send("ping", "127.0.0.1", 9999)
function UDP.send(sock, data, host, port)
  check_type(host, "string", 2, "send")
  if not is_ip(host) then
    local addrs, err, code = dns.resolve(host)
    if not addrs then return nil, err, code end
    host = addrs[1]
  end
  return raw_send(sock, data, host, port)
end

--- A UDP socket bound to host:port. May block (to resolve a host name).
-- @function udp.bind
-- @tparam string host
-- @tparam integer port 0 picks a free one
-- @return a UDP socket, or nil, msg, code
-- @usage local sock = assert(loom.udp.bind("127.0.0.1", 0))
function udp.bind(host, port)
  check_type(host, "string", 1, "bind")
  check_port(port, 2, "bind")
  local addrs, err, code = dns.resolve(host)
  if not addrs then return nil, err, code end
  return core._udp_bind(addrs[1], port)
end

return { tcp = tcp, unix = unix, dns = dns, udp = udp, _run_server = run_server, _log = stderr_log,
  _host_of = function(st) return hosts[st] end, _server_tls = server_tls, _traceback = handler_traceback }
