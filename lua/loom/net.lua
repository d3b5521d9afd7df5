--- loom.tcp, loom.unix, loom.dns: streams over TCP and Unix sockets.
-- The streams and servers are C objects (src/stream.c, src/tcp.c); this
-- module resolves names, tries addresses in turn, applies options and runs
-- servers. Operational failures return `nil, msg, code` with libuv's code
-- names ("ECONNREFUSED", "ETIMEDOUT", "EAI_NONAME" ...); misuse raises.
-- @module loom.net
local core = require "loom.core"

local tcp, unix, dns = {}, {}, {}

local function argerror(n, fname, msg)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end

local function check_type(v, t, n, fname)
  if type(v) ~= t then argerror(n, fname, ("%s expected, got %s"):format(t, v == nil and "nil" or type(v))) end
end

local function check_port(port, n, fname)
  if math.type(port) ~= "integer" then
    argerror(n, fname, ("number expected, got %s"):format(port == nil and "nil" or type(port)))
  end
  if port < 0 or port > 65535 then argerror(n, fname, "port must be 0-65535") end
end

local function is_ip(host)
  return host:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:find(":", 1, true) ~= nil
end

--- The addresses of a host name (IPv4 and IPv6, as strings, without
-- duplicates), or nil, msg, code. Resolved in the thread pool. May block.
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

local function remaining(deadline)
  return math.max(0, deadline - core.now())
end

--- Connects to host:port and returns a stream, or nil, msg, code. Host names
-- resolve without blocking the loop; each address is tried in turn.
-- `opts.timeout` (seconds, for the whole attempt: nil, "timeout",
-- "ETIMEDOUT"), `opts.nodelay` (default true), `opts.keepalive` (seconds or
-- boolean). May block.
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
      return st
    end
    err, code = e, c
  end
  return nil, ("%s:%d: %s"):format(host, port, err), code
end

--- Listens on host:port (port 0: a free one, see server:address()) and
-- returns a server (`accept`, `address`, `close`), or nil, msg, code.
-- `opts.backlog` (default 511), `opts.reuseport` (several processes may
-- listen on the port; the kernel spreads connections). May block (to
-- resolve a host name).
function tcp.listen(host, port, opts)
  check_type(host, "string", 1, "listen")
  check_port(port, 2, "listen")
  if opts ~= nil then check_type(opts, "table", 3, "listen") end
  opts = opts or {}
  local addrs, err, code = dns.resolve(host)
  if not addrs then return nil, err, code end
  return core._tcp_listen(addrs[1], port, opts.backlog, opts.reuseport)
end

-- Accepts connections for ever, each handled in its own task; a handler's
-- error is logged with its traceback and its connection closed; running out
-- of descriptors (EMFILE) backs off instead of spinning.
local function run_server(server, handler, what)
  core.spawn(function()
    while true do
      local st, err, code = server:accept()
      if st then
        core.spawn(function()
          local ok, e = xpcall(handler, debug.traceback, st)
          st:close()
          if not ok and not core.is_cancelled(e) then
            io.stderr:write(("loom: %s handler failed: %s\n"):format(what, tostring(e)))
          end
        end)
      elseif err == "closed" then
        return
      else
        if code ~= "EMFILE" and code ~= "ENFILE" then
          io.stderr:write(("loom: %s accept failed: %s\n"):format(what, tostring(err)))
        end
        core.sleep(0.05)
      end
    end
  end).name = what .. " acceptor"
  return server
end

--- Listens on host:port and runs handler(stream) in a task per connection;
-- the stream is closed after. Returns the server (`address`, `close`: stop
-- accepting; handlers already running go on), or nil, msg, code.
function tcp.serve(host, port, handler, opts)
  check_type(handler, "function", 3, "serve")
  local server, err, code = tcp.listen(host, port, opts)
  if not server then return nil, err, code end
  return run_server(server, handler, "tcp server")
end

--- Connects to the Unix socket at path: a stream, or nil, msg, code. May block.
function unix.connect(path)
  check_type(path, "string", 1, "connect")
  return core._pipe_connect(path)
end

--- Listens on a Unix socket at path: a server, or nil, msg, code.
function unix.listen(path, opts)
  check_type(path, "string", 1, "listen")
  return core._pipe_listen(path, opts and opts.backlog)
end

--- As tcp.serve, on a Unix socket at path.
function unix.serve(path, handler, opts)
  check_type(handler, "function", 2, "serve")
  local server, err, code = unix.listen(path, opts)
  if not server then return nil, err, code end
  return run_server(server, handler, "unix server")
end

local udp = {}

local UDP = core._UDP.__index
local raw_send = UDP.send

--- socket:send(data, host, port): sends one datagram; host may be a name
-- (resolved first, which may block). true, or nil, msg, code.
function UDP.send(sock, data, host, port)
  check_type(host, "string", 2, "send")
  if not is_ip(host) then
    local addrs, err, code = dns.resolve(host)
    if not addrs then return nil, err, code end
    host = addrs[1]
  end
  return raw_send(sock, data, host, port)
end

--- A UDP socket bound to host:port (port 0: a free one): `send(data, host,
-- port)`, `recv([timeout])` (data, host, port), `sockname()`, `close()`; or
-- nil, msg, code. May block (to resolve a host name).
function udp.bind(host, port)
  check_type(host, "string", 1, "bind")
  check_port(port, 2, "bind")
  local addrs, err, code = dns.resolve(host)
  if not addrs then return nil, err, code end
  return core._udp_bind(addrs[1], port)
end

return { tcp = tcp, unix = unix, dns = dns, udp = udp }
