--- loom.socket: the shape of LuaSocket's `socket` module over loom's
-- streams, so libraries written for LuaSocket (redis-lua, `socket.http`,
-- MQTT and SMTP clients ...) run inside tasks without blocking the loop, as
-- copas does for its coroutines. Calls that block in LuaSocket block the
-- calling task here; results, error strings ("timeout", "closed",
-- "connection refused", "host not found" ...) and partial results follow
-- LuaSocket's. Outside a task there is no loop to wait in: `tcp()`,
-- `udp()`, `connect` and `bind` then give LuaSocket's own blocking sockets
-- (when LuaSocket is installed), `sleep` sleeps the thread, the rest works
-- as anywhere.
-- @module loom.socket
local core = require "loom.core"
local net = require "loom.net"

local socket = {
  _VERSION = "LuaSocket 3.1.0",
  --- the chunk size LuaSocket's sources read (`socket.BLOCKSIZE`)
  BLOCKSIZE = 2048,
}

local now, current = core.now, core.current
local find, sub, gsub, concat = string.find, string.sub, string.gsub, table.concat
local READ_MAX = 64 * 1024
local LINE_MAX = math.maxinteger -- LuaSocket's lines have no limit

-- LuaSocket's error strings for loom's codes (LuaSocket's socket_strerror
-- and gai_strerror); others keep loom's message.
local ERRORS = {
  ECONNREFUSED = "connection refused", ETIMEDOUT = "timeout", ECLOSED = "closed", EOF = "closed",
  ECONNRESET = "closed", ECONNABORTED = "closed", EPIPE = "closed", EADDRINUSE = "address already in use",
  EACCES = "permission denied", EISCONN = "already connected",
  EAI_NONAME = "host or service not provided, or not known", EAI_AGAIN = "temporary failure in name resolution",
  EAI_FAIL = "non-recoverable failure in name resolution", EAI_NODATA = "host or service not provided, or not known",
}
local function lserr(msg, code) return ERRORS[code] or msg end

local luasocket -- LuaSocket's core, for sockets made outside a task
local function blocking(fname)
  if luasocket == nil then
    local ok, m = pcall(require, "socket.core")
    luasocket = ok and m or false
  end
  if not luasocket then
    error(("loom.socket.%s: outside a task this needs LuaSocket (Debian's lua-socket)"):format(fname), 3)
  end
  return luasocket
end

local function in_task() return current() ~= nil end

local function family_of(ip) return ip and ip:find(":", 1, true) and "inet6" or "inet" end

-- An address for host: itself when it is one, else its first resolved.
local function to_ip(host)
  if host:find("^%d+%.%d+%.%d+%.%d+$") or host:find(":", 1, true) then return host end
  local list, msg, code = net.dns.resolve(host)
  if not list then return nil, lserr(msg, code) end
  return list[1]
end

local TCP, UDP = {}, {} -- the socket classes, below
local new_tcp, new_udp, refresh

-- The module's constructors.


--- A TCP master socket (`tcp4` and `tcp6` name the family). Outside a
-- task, LuaSocket's own.
-- @return a tcp
function socket.tcp()
  if not in_task() then return blocking("tcp").tcp() end
  return new_tcp("inet")
end
function socket.tcp4()
  if not in_task() then return blocking("tcp4").tcp4() end
  return new_tcp("inet")
end
function socket.tcp6()
  if not in_task() then return blocking("tcp6").tcp6() end
  return new_tcp("inet6")
end

--- A UDP socket (`udp4`, `udp6`). Outside a task, LuaSocket's own.
-- @return a udp
function socket.udp()
  if not in_task() then return blocking("udp").udp() end
  return new_udp("inet")
end
function socket.udp4()
  if not in_task() then return blocking("udp4").udp4() end
  return new_udp("inet")
end
function socket.udp6()
  if not in_task() then return blocking("udp6").udp6() end
  return new_udp("inet6")
end

--- A connected TCP socket. Blocks.
-- @return a tcp, or nil, err
function socket.connect(host, port)
  if not in_task() then return blocking("connect").connect(host, port) end
  local s = new_tcp("inet")
  local ok, err = s:connect(host, port)
  if not ok then return nil, err end
  return s
end
socket.connect4 = socket.connect
socket.connect6 = socket.connect

--- A TCP server socket bound to host:port.
-- @return a tcp, or nil, err
function socket.bind(host, port, backlog)
  if not in_task() then return blocking("bind").bind(host, port, backlog) end
  local s = new_tcp(host and host:find(":", 1, true) and "inet6" or "inet")
  s._backlog = backlog
  local ok, err = s:bind(host, port)
  if not ok then return nil, err end
  s:listen(backlog)
  return s
end

--- Seconds since the epoch, to the microsecond.
socket.gettime = core._walltime

--- Sleeps: the task inside a task, else the thread.
function socket.sleep(seconds)
  if in_task() then return core.sleep(math.max(seconds or 0, 0)) end
  return core._sleep_blocking(seconds)
end

--- Which sockets are ready: `recvt` ones with data to read (or a
-- connection to accept), `sendt` ones that can send (loom sockets always
-- can: a send waits itself). Blocks up to `timeout` (nil or negative: no
-- limit). Reading ahead for select keeps the bytes in the socket, so
-- nothing is lost.
-- @return readable, writable (lists, also keyed by socket), and "timeout"
-- when none
function socket.select(recvt, sendt, timeout)
  local readable, writable = {}, {}
  for _, s in ipairs(sendt or {}) do
    if getmetatable(s) == TCP and s._state == "client" or getmetatable(s) == UDP then
      writable[#writable + 1], writable[s] = s, true
    end
  end
  local waiting = {}
  for _, s in ipairs(recvt or {}) do
    if s._state == "closed" or (getmetatable(s) == TCP and (s:dirty() or s._accepted)) then
      readable[#readable + 1], readable[s] = s, true
    elseif getmetatable(s) == TCP and (s._state == "client" or s._state == "server") then
      waiting[#waiting + 1] = s
    end
  end
  if #readable > 0 or #writable > 0 or #waiting == 0 then
    if #readable == 0 and #writable == 0 then
      if timeout and timeout > 0 then socket.sleep(timeout) end
      return readable, writable, "timeout"
    end
    return readable, writable
  end
  -- read ahead (or accept ahead) on each until one is ready
  local got = core.event()
  local tasks = {}
  for i, s in ipairs(waiting) do
    tasks[i] = core.spawn(function()
      if s._state == "server" then
        local c = s._server:accept()
        if c then s._accepted = new_tcp(s._family, c) end
      else
        local data = s._stream:read(READ_MAX)
        if data then
          s._buf, s._pos = sub(s._buf, s._pos) .. data, 1
          refresh(s)
        else
          s._eof_seen = true
        end
      end
      got:set()
    end)
  end
  if timeout and timeout >= 0 then
    core.timeout(math.max(timeout, 1e-6), got.wait, got)
  else
    got:wait()
  end
  for _, t in ipairs(tasks) do t:cancel() end
  for _, t in ipairs(tasks) do pcall(t.await, t) end
  for _, s in ipairs(waiting) do
    if s:dirty() or s._accepted or s._eof_seen then
      s._eof_seen = nil
      readable[#readable + 1], readable[s] = s, true
    end
  end
  if #readable == 0 then return readable, writable, "timeout" end
  return readable, writable
end

-- Name resolution.

--- Name resolution: `toip`, `tohostname`, `getaddrinfo`, `gethostname`.
-- @table dns
socket.dns = {}

function socket.dns.toip(name)
  local list = net.dns.resolve(name)
  if not list then return nil, "host not found" end
  return list[1], { name = name, alias = {}, ip = list }
end

function socket.dns.tohostname(addr)
  local ip, err = to_ip(addr)
  if not ip then return nil, err end
  local name, msg, code = core._getnameinfo(ip)
  if not name then return nil, lserr(msg, code) end
  return name, { name = name, alias = {}, ip = { ip } }
end

function socket.dns.getaddrinfo(name)
  local list, msg, code = net.dns.resolve(name)
  if not list then return nil, lserr(msg, code) end
  local out = {}
  for i, ip in ipairs(list) do out[i] = { addr = ip, family = family_of(ip) } end
  return out
end

function socket.dns.gethostname()
  return core._hostname()
end

-- LuaSocket's helpers.

-- LuaSocket's try/protect: errors thrown by a try carry this metatable, so
-- protect returns them as nil, err and lets every other error through.
local Thrown = {}

--- Returns its arguments after the first `d`.
function socket.skip(d, ...)
  return select(d + 1, ...)
end

--- A try function: returns its arguments when the first is true, else
-- calls `finalizer` and throws the second for `protect` to catch.
function socket.newtry(finalizer)
  return function(...)
    local ok = ...
    if ok then return ... end
    if finalizer then pcall(finalizer) end
    error(setmetatable({ (select(2, ...)) }, Thrown), 0)
  end
end

socket.try = socket.newtry()

--- Wraps `f` so that what a try threw comes back as `nil, err`.
function socket.protect(f)
  return function(...)
    local r = table.pack(pcall(f, ...))
    if r[1] then return table.unpack(r, 2, r.n) end
    if getmetatable(r[2]) == Thrown then return nil, r[2][1] end
    error(r[2], 0)
  end
end

--- `t[key]` or `t.default`, called: LuaSocket's choose.
function socket.choose(t)
  return function(name, opt1, opt2)
    if type(name) ~= "string" then name, opt1, opt2 = "default", name, opt1 end
    local f = t[name or "nil"]
    if not f then error("unknown key (" .. tostring(name) .. ")", 3) end
    return f(opt1, opt2)
  end
end

socket.sourcet, socket.sinkt = {}, {}

socket.sinkt["close-when-done"] = function(sock)
  return setmetatable({ getfd = function() return sock:getfd() end, dirty = function() return sock:dirty() end }, {
    __call = function(_, chunk)
      if not chunk then
        sock:close()
        return 1
      end
      return sock:send(chunk)
    end,
  })
end

socket.sinkt["keep-open"] = function(sock)
  return setmetatable({ getfd = function() return sock:getfd() end, dirty = function() return sock:dirty() end }, {
    __call = function(_, chunk)
      if chunk then return sock:send(chunk) end
      return 1
    end,
  })
end
socket.sinkt.default = socket.sinkt["keep-open"]

socket.sourcet["by-length"] = function(sock, length)
  return setmetatable({ getfd = function() return sock:getfd() end, dirty = function() return sock:dirty() end }, {
    __call = function()
      if length <= 0 then return nil end
      local chunk, err = sock:receive(math.min(socket.BLOCKSIZE, length))
      if err then return nil, err end
      length = length - #chunk
      return chunk
    end,
  })
end

socket.sourcet["until-closed"] = function(sock)
  local done = false
  return setmetatable({ getfd = function() return sock:getfd() end, dirty = function() return sock:dirty() end }, {
    __call = function()
      if done then return nil end
      local chunk, err, partial = sock:receive(socket.BLOCKSIZE)
      if not err then return chunk end
      if err == "closed" then
        sock:close()
        done = true
        return partial
      end
      return nil, err
    end,
  })
end
socket.sourcet.default = socket.sourcet["until-closed"]

--- LuaSocket's sink and source constructors over a socket.
socket.sink = socket.choose(socket.sinkt)
socket.source = socket.choose(socket.sourcet)

-- TCP sockets.

--- A TCP socket (`tcp()`, `connect`, `bind`, `accept`): LuaSocket's
-- master, client and server objects in one, by state.
-- @type tcp
TCP.__index = TCP

-- Whether receive and send may take the C path (src/lsocket.c): self._fast
-- is the stream when the socket is connected, has no timeout, has not shut
-- its receiving side and holds nothing select read ahead; else false. Every
-- change of those calls this.
function refresh(self)
  local fast = self._state == "client" and self._timeout == nil and not self._rclosed and self._pos > #self._buf
  if fast and self._st_timeout ~= 0 then
    self._stream:set_timeout(0)
    self._st_timeout = 0
  end
  self._fast = fast and self._stream
end
TCP._refresh = refresh -- for loom.socket.ssl

function new_tcp(family, stream)
  if stream then stream:set_line_max(LINE_MAX) end
  local s = setmetatable({
    _state = stream and "client" or "master",
    _family = family or "inet",
    _stream = stream,
    _buf = "",
    _pos = 1,
    _recv_base = 0, -- the stream's counts where getstats counts from
    _sent_base = 0,
    _born = now(),
    _opts = {},
  }, TCP)
  refresh(s)
  return s
end

-- A socket nobody can reach any more is closed, as LuaSocket's are (a
-- library that only shuts its socket down, as redis-lua's quit does, would
-- otherwise keep it open until loom.run ends). Closing never blocks, and no
-- task can be waiting on a socket nobody reaches.
function TCP:__gc()
  if self._state ~= "closed" then
    if self._stream then self._stream:close() end
    if self._server then self._server:close() end
  end
end

function TCP:__tostring()
  return ("tcp{%s}: %s"):format(self._state, tostring(self._opts):match("0x%x+") or "?")
end

--- Sets the timeout of blocking calls: `nil` or negative blocks for as long
-- as it takes, `0` never waits; mode `"b"` (default) limits each wait inside
-- a call, `"t"` the whole call. Never blocks.
-- @function tcp:settimeout
-- @param value seconds
-- @string[opt] mode `"b"` or `"t"`
-- @return 1
function TCP:settimeout(value, mode)
  if value ~= nil and type(value) ~= "number" then
    error(("bad argument #1 to 'settimeout' (number expected, got %s)"):format(type(value)), 2)
  end
  if value ~= nil and value < 0 then value = nil end
  mode = mode or "b"
  if mode ~= "b" and mode ~= "t" and mode ~= "r" then
    error("bad argument #2 to 'settimeout' (invalid timeout mode)", 2)
  end
  self._timeout, self._total = value, mode == "t"
  if getmetatable(self) == TCP then refresh(self) end
  return 1
end

-- The deadline of a call (nil: none).
local function deadline(self)
  return self._timeout and now() + self._timeout or nil
end

-- Seconds the next wait may take within a call whose deadline is dl: 0 for
-- none (loom's stream timeout), a tiny one when the time is up (a read of
-- bytes already there still succeeds).
local function wait_for(self, dl)
  local t = self._timeout
  if t == nil then return 0 end
  if self._total then t = dl - now() end
  return t > 0 and t or 1e-6
end

-- A call made in the wrong state: "closed" once closed, else err.
local function wrong_state(self, err)
  if self._state == "closed" then return nil, "closed" end
  return nil, err
end

-- Sets the stream's timeout for the next wait of a call whose deadline is
-- dl (the stream keeps it: set only when it changes).
local function arm(self, dl)
  local t = self._timeout and wait_for(self, dl) or 0
  if t ~= self._st_timeout then
    self._stream:set_timeout(t)
    self._st_timeout = t
  end
  return self._stream
end

-- One read of whatever comes; nil, err ("timeout", "closed" ...) else.
local function pull(self, dl)
  if self._rclosed or self._state == "closed" then return nil, "closed" end
  local data, msg, code = arm(self, dl):read(READ_MAX)
  if data then return data end
  return nil, lserr(msg, code)
end

-- After a read that failed: what the stream still holds, taken (LuaSocket
-- hands it back as the partial result). Bytes buffered are read at once.
local function leftover(self)
  local n = self._stream:_buffered()
  return n > 0 and self._stream:read(n) or ""
end

-- A read by the stream that failed: LuaSocket's error, and the bytes read
-- so far (those the stream hands back, else what it still holds).
local function failed(self, line, prefix, msg, code, part)
  part = part or leftover(self)
  if line then part = gsub(part, "\r", "") end
  return nil, lserr(msg, code), prefix .. part
end

-- A line (n nil) or n bytes read by the stream itself, in C: the usual
-- case, when select's read-ahead left nothing in self._buf.
local function receive_direct(self, n, prefix, dl)
  if self._rclosed or self._state == "closed" then return nil, "closed", prefix end
  local st = arm(self, dl)
  local data, msg, code, part
  if n == nil then
    data, msg, code, part = st:read_line(true)
    if data and find(data, "\r", 1, true) then data = gsub(data, "\r", "") end -- as LuaSocket: every CR dropped
  else
    data, msg, code, part = st:read_exactly(n)
  end
  if data then return prefix .. data, nil, nil end
  return failed(self, n == nil, prefix, msg, code, part)
end

-- Everything select read ahead was taken: the C path may serve again.
local function taken_all(self)
  self._buf, self._pos = "", 1
  refresh(self)
end

--- Reads, as LuaSocket does: `"*l"` (or `"l"`, the default) a line without
-- its end (CRs dropped; no length limit, as in LuaSocket), `"*a"` (`"a"`)
-- everything until the peer closes, a number that many bytes. Blocks. On
-- failure the bytes read so far come third: `nil, "timeout", partial` or
-- `nil, "closed", partial`.
-- @function tcp:receive
-- @param[opt] pattern the pattern
-- @string[opt] prefix prepended to the result (and to a partial one)
-- @return the data, or nil, err, partial
local function receive(self, pattern, prefix)
  -- a closed socket still gives what it received before (as LuaSocket's buffer does), then "closed"
  if self._state ~= "client" and self._state ~= "closed" then return nil, "not connected" end
  pattern, prefix = pattern or "*l", prefix or ""
  local dl = self._timeout and deadline(self)
  -- bytes select read ahead and not taken are self._buf from self._pos on
  local buf, pos = self._buf, self._pos
  if pattern == "*l" or pattern == "l" then
    if pos > #buf then return receive_direct(self, nil, prefix, dl) end
    local i = find(buf, "\n", pos, true)
    if i then
      local line = gsub(sub(buf, pos, i - 1), "\r", "")
      if i == #buf then taken_all(self) else self._pos = i + 1 end
      return prefix .. line, nil, nil
    end
    taken_all(self) -- the rest of the line is in the stream
    return receive_direct(self, nil, prefix .. gsub(sub(buf, pos), "\r", ""), dl)
  elseif pattern == "*a" or pattern == "a" then
    local parts = { prefix, sub(buf, pos) }
    local got = #parts[2]
    taken_all(self)
    while true do
      local data, err = pull(self, dl)
      if not data then
        -- as LuaSocket: everything up to the close, but a close with nothing before it is "closed"
        if err == "closed" and got > 0 then return concat(parts), nil, nil end
        return nil, err, concat(parts)
      end
      parts[#parts + 1] = data
      got = got + #data
    end
  elseif type(pattern) == "number" or tonumber(pattern) then
    local n = math.max(math.floor(tonumber(pattern)) - #prefix, 0) -- as LuaSocket: the prefix counts
    if pos > #buf then return receive_direct(self, n, prefix, dl) end
    local have = #buf - pos + 1
    if have >= n then
      local out = sub(buf, pos, pos + n - 1)
      if have == n then taken_all(self) else self._pos = pos + n end
      return prefix .. out, nil, nil
    end
    taken_all(self)
    return receive_direct(self, n - have, prefix .. sub(buf, pos), dl)
  end
  error("bad argument #1 to 'receive' (invalid receive pattern)", 3) -- 3: called by the C receive
end

--- Sends `data:sub(i, j)`. May block (while the outgoing queue is full).
-- @function tcp:send
-- @string data the data
-- @int[opt] i first byte
-- @int[opt] j last byte
-- @return the index of the last byte sent, or nil, err, the index of the
-- last byte sent before the failure
local function send(self, data, i, j)
  if type(data) ~= "string" then
    if type(data) ~= "number" then
      error(("bad argument #1 to 'send' (string expected, got %s)"):format(type(data)), 3) -- as receive's
    end
    data = tostring(data)
  end
  local len = #data
  i, j = i or 1, j or -1
  if i < 0 then i = math.max(len + i + 1, 1) elseif i < 1 then i = 1 end
  if j < 0 then j = len + j + 1 elseif j > len then j = len end
  if self._state ~= "client" then
    if self._state == "closed" then return nil, "closed", i - 1.0 end
    return nil, "not connected"
  end
  if i > j then return i - 1.0, nil, nil end
  local ok, msg, code = arm(self, self._timeout and deadline(self)):write((i == 1 and j == len) and data or data:sub(i, j))
  if not ok then return nil, lserr(msg, code), i - 1.0 end
  return j + 0.0, nil, nil -- LuaSocket's counts are floats, and its results three
end

-- The usual calls (a line or n bytes, a whole string, on a socket with
-- _fast set) are served in C; the rest come to the functions above.
TCP.receive, TCP.send = core._lsocket(receive, send, ERRORS)

--- Connects a master socket. Blocks (host names resolve without blocking
-- the loop).
-- @function tcp:connect
-- @string host a name or an address
-- @int port the port
-- @return 1, or nil, err ("connection refused", "timeout", "host not found" ...)
function TCP:connect(host, port)
  if self._state ~= "master" then return wrong_state(self, "already connected") end
  port = tonumber(port)
  if type(host) ~= "string" or not port then error("bad argument to 'connect' (host and port expected)", 2) end
  local t = self._timeout
  local st, msg, code = net.tcp.connect(host, math.floor(port), {
    timeout = t and t > 0 and t or nil,
    nodelay = self._opts["tcp-nodelay"] ~= false,
    keepalive = self._opts.keepalive,
  })
  if not st then return nil, lserr(msg, code) end
  st:set_line_max(LINE_MAX)
  self._stream, self._state = st, "client"
  refresh(self)
  if self._opts.linger and self._opts.linger.on then st:set_linger(self._opts.linger.timeout or 0) end
  return 1
end

--- Binds a master socket (listening starts here: `listen` then only
-- changes its state). `"*"` binds every address.
-- @function tcp:bind
-- @string host an address or `"*"`
-- @int port the port (0 picks a free one)
-- @return 1, or nil, err
function TCP:bind(host, port)
  if self._state ~= "master" then return wrong_state(self, "already bound") end
  if host == "*" then host = self._family == "inet6" and "::" or "0.0.0.0" end
  local srv, msg, code = net.tcp.listen(host, math.floor(tonumber(port) or 0), {
    reuseport = self._opts.reuseport,
    backlog = self._backlog,
  })
  if not srv then return nil, lserr(msg, code) end
  self._server, self._state = srv, "bound"
  return 1
end

--- Makes a bound socket a server. Never blocks.
-- @function tcp:listen
-- @int[opt] backlog kept for LuaSocket's shape (the kernel's queue was
-- sized at bind)
-- @return 1, or nil, err
function TCP:listen(backlog)
  if self._state == "master" then
    self._backlog = backlog
    local ok, err = self:bind("*", 0)
    if not ok then return nil, err end
  end
  if self._state ~= "bound" then return wrong_state(self, "not bound") end
  self._state = "server"
  return 1
end

--- The next connection of a server. Blocks (up to the timeout).
-- @function tcp:accept
-- @return a client tcp, or nil, err ("timeout", "closed")
function TCP:accept()
  if self._state ~= "server" then return wrong_state(self, "not listening") end
  local pending = self._accepted
  if pending then
    self._accepted = nil
    return pending
  end
  local srv, st, msg, code = self._server, nil, nil, nil
  if self._timeout then
    local ok
    ok, st, msg, code = core.timeout(math.max(self._timeout, 1e-6), srv.accept, srv)
    if not ok then return nil, "timeout" end
  else
    st, msg, code = srv:accept()
  end
  if not st then return nil, lserr(msg, code) end
  return new_tcp(self._family, st)
end

--- Closes the socket. Never blocks (what was sent is still delivered).
-- As in LuaSocket, bytes received and not yet read stay readable:
-- `receive` gives them, then `nil, "closed", partial`.
-- @function tcp:close
-- @return 1
function TCP:close()
  if self._state == "client" then -- what came and was not read stays readable, as in LuaSocket's buffer
    self._buf, self._pos = sub(self._buf, self._pos) .. leftover(self), 1
  end
  if self._stream then self._stream:close() end
  if self._server then self._server:close() end
  self._state = "closed"
  refresh(self)
  return 1
end

--- Shuts down one or both directions.
-- @function tcp:shutdown
-- @string[opt] how `"both"` (default), `"send"` or `"receive"`
-- @return 1
function TCP:shutdown(how)
  how = how or "both"
  if self._state ~= "client" then return wrong_state(self, "not connected") end
  if how == "send" or how == "both" then self._stream:shutdown() end
  if how == "receive" or how == "both" then
    self._rclosed = true
    refresh(self)
  end
  return 1
end

--- The peer's address: `ip, port, family`.
-- @function tcp:getpeername
function TCP:getpeername()
  if self._state ~= "client" then return nil, "not connected" end
  local ip, port = self._stream:peername()
  if not ip then return nil, port end
  return ip, port, family_of(ip)
end

--- This end's address: `ip, port, family`.
-- @function tcp:getsockname
function TCP:getsockname()
  local ip, port
  if self._state == "client" then
    ip, port = self._stream:sockname()
  elseif self._server then
    ip, port = self._server:address()
  else
    return nil, "not bound"
  end
  if not ip then return nil, port end
  return ip, port, family_of(ip)
end

--- Sets an option: `"tcp-nodelay"`, `"keepalive"` (booleans), `"linger"`
-- (`{on =, timeout =}`: how long a close may take to deliver what was
-- sent), `"reuseaddr"` (always on for loom's servers), `"reuseport"`,
-- `"ipv6-v6only"`. Never blocks.
-- @function tcp:setoption
-- @return 1, or nil, err
function TCP:setoption(name, value)
  if name == "tcp-nodelay" or name == "keepalive" then
    if self._stream then
      local ok, err = self._stream:_setopt(name == "tcp-nodelay" and "nodelay" or "keepalive", value)
      if not ok then return nil, err end
    end
  elseif name == "linger" then
    if type(value) ~= "table" then error("bad argument #2 to 'setoption' (table expected)", 2) end
    if self._stream and value.on then self._stream:set_linger(value.timeout or 0) end
  elseif name ~= "reuseaddr" and name ~= "reuseport" and name ~= "ipv6-v6only" then
    error(("bad argument #1 to 'setoption' (unsupported option '%s')"):format(tostring(name)), 2)
  end
  self._opts[name] = value
  return 1
end

--- The value an option was set to.
-- @function tcp:getoption
function TCP:getoption(name)
  local v = self._opts[name]
  if v == nil then
    if name == "tcp-nodelay" then return self._state == "client" end
    if name == "reuseaddr" then return true end
    return false
  end
  return v
end

-- Bytes the user has received (as LuaSocket counts: taken by receive,
-- not buffered) and sent, as the stream counts them.
local function counts(self)
  if not self._stream then return 0, 0 end
  local buffered, received, sent = self._stream:_buffered()
  return received - buffered - (#self._buf - self._pos + 1), sent
end

--- Bytes received, bytes sent, and the socket's age in seconds.
-- @function tcp:getstats
function TCP:getstats()
  local received, sent = counts(self)
  return received - self._recv_base + 0.0, sent - self._sent_base + 0.0, now() - self._born
end

--- Resets the statistics.
-- @function tcp:setstats
function TCP:setstats(received, sent, age)
  local r, s = counts(self)
  if received then self._recv_base = r - received end
  if sent then self._sent_base = s - sent end
  if age then self._born = now() - age end
  return 1
end

--- True when bytes received are waiting to be read (a read will not block).
-- @function tcp:dirty
function TCP:dirty()
  return #self._buf >= self._pos or (self._stream ~= nil and self._stream:_buffered() > 0)
end

--- The descriptor (for code that logs or compares it), -1 when there is
-- none. loom watches it itself: do not use it for I/O.
-- @function tcp:getfd
function TCP:getfd()
  return self._stream and self._stream:_fileno() or -1
end

--- LuaSec's methods on a wrapped socket (`loom.socket.ssl`).
-- @function tcp:dohandshake
function TCP:dohandshake() return require("loom.socket.ssl").dohandshake(self) end
function TCP:sni(name) return require("loom.socket.ssl").sni(self, name) end
function TCP:info() return require("loom.socket.ssl").info(self) end

--- Not supported: a loom socket's descriptor belongs to loom.
-- @function tcp:setfd
function TCP:setfd()
  error("setfd: not supported by loom.socket", 2)
end

-- UDP sockets.

--- A UDP socket (`udp()`), unconnected or, after `setpeername`, connected.
-- @type udp
UDP.__index = UDP

function UDP:__tostring()
  return ("udp{%s}: %s"):format(self._peer and "connected" or "unconnected", tostring(self._opts):match("0x%x+") or "?")
end

local function udp_sock(self)
  if self._closed then return nil, "closed" end
  if not self._sock then
    local s, msg, code = net.udp.bind(self._family == "inet6" and "::" or "0.0.0.0", 0)
    if not s then return nil, lserr(msg, code) end
    self._sock = s
  end
  return self._sock
end


--- Binds the socket to a local address (`"*"`: every address).
-- @function udp:setsockname
function UDP:setsockname(host, port)
  if self._sock then return nil, "already bound" end
  if host == "*" then host = self._family == "inet6" and "::" or "0.0.0.0" end
  local s, msg, code = net.udp.bind(host, math.floor(tonumber(port) or 0))
  if not s then return nil, lserr(msg, code) end
  self._sock = s
  return 1
end

--- Connects the socket to one peer (`"*"` disconnects): `send` and
-- `receive` then talk to it only.
-- @function udp:setpeername
function UDP:setpeername(host, port)
  if host == "*" then
    self._peer = nil
    return 1
  end
  local ip, err = to_ip(host)
  if not ip then return nil, err end
  local ok, e = udp_sock(self)
  if not ok then return nil, e end
  self._peer = { ip, math.floor(tonumber(port)) }
  return 1
end

--- Sends a datagram to an address. Never waits.
-- @function udp:sendto
-- @return the bytes sent, or nil, err
function UDP:sendto(data, ip, port)
  local s, err = udp_sock(self)
  if not s then return nil, err end
  local addr, e = to_ip(ip)
  if not addr then return nil, e end
  local ok, msg, code = s:send(data, addr, math.floor(tonumber(port)))
  if not ok then return nil, lserr(msg, code) end
  return #data
end

--- Sends a datagram to the peer (after `setpeername`).
-- @function udp:send
function UDP:send(data)
  if not self._peer then return nil, "not connected" end
  return self:sendto(data, self._peer[1], self._peer[2])
end

--- The next datagram, its sender's ip and port. Blocks (up to the
-- timeout).
-- @function udp:receivefrom
-- @int[opt] size the most bytes kept (8192 by default)
-- @return data, ip, port, or nil, err
function UDP:receivefrom(size)
  local s, err = udp_sock(self)
  if not s then return nil, err end
  local dl = self._timeout and now() + self._timeout
  while true do
    local data, host, port
    if dl then
      data, host, port = s:recv(math.max(dl - now(), 1e-6))
    else
      data, host, port = s:recv()
    end
    if not data then return nil, lserr(host, port) end
    local peer = self._peer
    if not peer or (peer[1] == host and peer[2] == port) then
      return data:sub(1, size or 8192), host, port
    end
  end
end

--- The next datagram (from the peer, when connected).
-- @function udp:receive
function UDP:receive(size)
  local data, err = self:receivefrom(size)
  return data, err
end

--- This end's address: `ip, port, family`.
-- @function udp:getsockname
function UDP:getsockname()
  if not self._sock then return nil, "not bound" end
  local ip, port = self._sock:sockname()
  return ip, port, family_of(ip)
end

--- The peer's address (after `setpeername`).
-- @function udp:getpeername
function UDP:getpeername()
  if not self._peer then return nil, "not connected" end
  return self._peer[1], self._peer[2], family_of(self._peer[1])
end

--- As on tcp sockets.
-- @function udp:settimeout
UDP.settimeout = TCP.settimeout

--- Options are kept (`"broadcast"`, `"dontroute"` ...) for `getoption`.
-- @function udp:setoption
function UDP:setoption(name, value)
  self._opts[name] = value
  return 1
end

function UDP:getoption(name) return self._opts[name] end

--- Closes the socket.
-- @function udp:close
function UDP:close()
  if self._sock then self._sock:close() end
  self._closed = true
  return 1
end

function UDP:dirty() return false end

function new_udp(family)
  return setmetatable({ _family = family, _opts = {} }, UDP)
end
function UDP:getfd() return -1 end

return socket
