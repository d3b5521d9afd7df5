--- loom.pg: PostgreSQL on libpq's asynchronous API, without blocking the
-- loop. Connections, queries, batches and notifications are in C
-- (src/pg.c: libpq's socket polled by libuv, results made into Lua values
-- there); transactions, LISTEN and the pool are here.
--
-- Types: int2/int4/int8/oid become Lua integers (exact), float4/float8
-- floats, bool booleans, bytea strings of its bytes, NULL nil; every other
-- type (numeric, dates, json, arrays ...) its text form.
-- @module loom.pg
local core = require "loom.core"
local args = require "loom.args"

local check_type, argerror = args.type, args.error
local pg = {}

local Conn = core._PgConn.__index
local resolve = require("loom.net").dns.resolve

local function is_literal(h)
  return h == "" or h:find("^[/@]") or h:find(":", 1, true) or h:find("^%d+%.%d+%.%d+%.%d+$")
end

-- libpq resolves host names itself, blocking the loop: names are resolved
-- here, in the thread pool, and handed to libpq as hostaddr (each address
-- of a name tried in turn, under the name, which TLS checks and .pgpass
-- matches).
local function open(conninfo, timeout)
  local ok, host, hostaddr = pcall(core._pg_hosts, conninfo)
  if not ok then return nil, "invalid connection string: " .. tostring(host):gsub("\n$", ""), "08001" end
  if host == nil or hostaddr ~= nil then return core._pg_connect(conninfo, timeout) end
  local hosts, addrs, named = {}, {}, false
  for h in (host .. ","):gmatch("([^,]*),") do
    if is_literal(h) then
      hosts[#hosts + 1], addrs[#addrs + 1] = h, ""
    else
      local list, err = resolve(h)
      if not list then return nil, ("could not resolve %q: %s"):format(h, err), "08001" end
      for _, a in ipairs(list) do hosts[#hosts + 1], addrs[#addrs + 1] = h, a end
      named = true
    end
  end
  if not named then return core._pg_connect(conninfo, timeout) end
  return core._pg_connect(conninfo, timeout, table.concat(hosts, ","), table.concat(addrs, ","))
end

--- Connects. Blocks (the task: host names are resolved in the thread pool
-- and libpq's socket is polled by the loop).
-- @string conninfo `"host=/run/postgresql dbname=app"` or a
-- `postgresql://user:pass@host:port/db` URL (libpq's forms)
-- @tparam[opt] table opts `timeout` (seconds, default 30)
-- @return a Conn, or nil, msg, code: the server's SQLSTATE when it answered
-- (`"28P01"` bad password, `"3D000"` unknown database), `"08001"` when no
-- connection could be made, `"ETIMEDOUT"`
-- @usage local conn = assert(loom.pg.connect("host=/tmp dbname=app"))
function pg.connect(conninfo, opts)
  check_type(conninfo, "string", 1, "connect")
  check_type(opts, "table", 2, "connect", true)
  local timeout = opts and opts.timeout or 30
  if type(timeout) ~= "number" or timeout <= 0 then argerror(2, "connect", "timeout must be a positive number") end
  return open(conninfo, timeout)
end

local Pool = {} -- the pool's methods, below

--- A pool of at most `max` connections, opened as needed.
-- @tparam table opts `conninfo` (or `[1]`), `max` (default 10), `timeout`
-- (seconds to wait for a free connection; default: as long as it takes),
-- `connect_timeout` (default 30)
-- @return a Pool
-- @usage local pool = loom.pg.pool{"host=/tmp dbname=app", max = 10, timeout = 5}
function pg.pool(opts)
  check_type(opts, "table", 1, "pool")
  local conninfo = opts.conninfo or opts[1]
  if type(conninfo) ~= "string" then argerror(1, "pool", "conninfo must be a string") end
  local max = opts.max or 10
  if math.type(max) ~= "integer" or max < 1 then argerror(1, "pool", "max must be a positive integer") end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout < 0) then
    argerror(1, "pool", "timeout must be a non-negative number")
  end
  return setmetatable({
    _conninfo = conninfo,
    _max = max,
    _timeout = opts.timeout,
    _connect_timeout = opts.connect_timeout or 30,
    _sem = core.semaphore(max),
    _idle = {},
    _open = 0,
    _guards = setmetatable({}, { __mode = "k" }),
    _listening = setmetatable({}, { __mode = "k" }),
  }, Pool)
end

local function pack(...) return { n = select("#", ...), ... } end

--- Runs `fn(conn, ...)` in a transaction: `BEGIN`, then `COMMIT` when fn
-- returns (its results are returned), or `ROLLBACK` and the same error value
-- raised again when it raises or its task is cancelled. A body that caught
-- a failed statement and returned leaves an aborted transaction: it is
-- rolled back and nil, msg, "25P02" returned. Blocks.
-- @function Conn:transaction
-- @func fn the body
-- @param ... its arguments after the connection
-- @return fn's results, or nil, msg, sqlstate when BEGIN or COMMIT failed
-- @usage conn:transaction(function(c) assert(c:query("UPDATE ...")) end)
function Conn:transaction(fn, ...)
  check_type(fn, "function", 2, "transaction")
  local ok, err, code = self:exec("BEGIN")
  if not ok then return nil, err, code end
  local res = pack(pcall(fn, self, ...))
  if not res[1] then
    self:exec("ROLLBACK")
    error(res[2], 0)
  end
  if self:_txstatus() == "inerror" then
    self:exec("ROLLBACK")
    return nil, "the transaction was aborted by an error inside it and has been rolled back", "25P02"
  end
  ok, err, code = self:exec("COMMIT")
  if not ok then return nil, err, code end
  return table.unpack(res, 2, res.n)
end

--- Listens on a channel (`LISTEN`): its notifications then come through
-- `notifications`. Blocks.
-- @function Conn:listen
-- @string channel the channel's name (any text: it is quoted here)
-- @return true, or nil, msg, sqlstate
function Conn:listen(channel)
  check_type(channel, "string", 2, "listen")
  local ok, err, code = self:exec('LISTEN "' .. channel:gsub('"', '""') .. '"')
  if not ok then return nil, err, code end
  self:_listening(true)
  return true
end

--- The notifications of the channels listened on, as an iterator of
-- `channel, payload, pid` (the notifying backend's). Waits between
-- notifications; ends when the connection is closed or lost (then
-- `conn:status()` says which).
-- @function Conn:notifications
-- @usage for channel, payload in conn:notifications() do ... end
function Conn:notifications()
  return function()
    local channel, payload, pid = self:_notification()
    if channel == nil then return nil end
    return channel, payload, pid
  end
end

-- Feeds a COPY FROM STDIN from source; nil, msg, code if the connection failed.
local function feed(conn, source)
  local put = conn._copy_put
  if type(source) == "string" then return put(conn, source) end
  if type(source) == "table" then
    for i = 1, #source do
      local chunk = source[i]
      if type(chunk) ~= "string" then error(("copy_from: source[%d] is a %s, not a string"):format(i, type(chunk)), 0) end
      local ok, err, code = put(conn, chunk)
      if not ok then return nil, err, code end
    end
    return true
  end
  while true do
    local chunk = source()
    if chunk == nil then return true end
    if type(chunk) ~= "string" then error(("copy_from: the source gave a %s, not a string"):format(type(chunk)), 0) end
    local ok, err, code = put(conn, chunk)
    if not ok then return nil, err, code end
  end
end

--- Copies data into a table (`COPY ... FROM STDIN`), streamed: a slow
-- server blocks the task between chunks, so memory holds one chunk at a
-- time. All or nothing: a source that raises (or a cancelled task) aborts
-- the COPY and nothing of it is kept. Blocks; the connection is the copy's
-- until it ends.
-- @function Conn:copy_from
-- @string sql `COPY table [(columns)] FROM STDIN [options]`
-- @param source the data in the COPY's format: a string, a list of strings,
-- or a function returning the next chunk and nil at the end (a stream's
-- `read`, lines of a file ...)
-- @return the number of rows copied, or nil, msg, sqlstate (bad data: the
-- server's error, "22P02" ...)
-- @usage assert(conn:copy_from("COPY items (id, name) FROM STDIN (FORMAT csv)", {"1,a\n", "2,b\n"}))
function Conn:copy_from(sql, source)
  check_type(sql, "string", 2, "copy_from")
  local ts = type(source)
  if ts ~= "string" and ts ~= "table" and ts ~= "function" then
    argerror(3, "copy_from", ("string, table or function expected, got %s"):format(source == nil and "no value" or ts))
  end
  local mode, err, code = self:_copy_start(sql)
  if not mode then return nil, err, code end
  if mode ~= "in" then
    self:_copy_abort()
    return nil, "copy_from needs COPY ... FROM STDIN", "42601"
  end
  local ok, fed, ferr, fcode = pcall(feed, self, source)
  if not ok then
    self:_copy_abort(type(fed) == "string" and fed or "COPY aborted")
    error(fed, 0)
  end
  if not fed then return nil, ferr, fcode end
  return self:_copy_end()
end

-- Reads a COPY TO STDOUT into write; the rows copied, or nil, msg, code.
local function drain(conn, write)
  local get = conn._copy_get
  while true do
    local data, n, code = get(conn)
    if data == nil then
      if code then return nil, n, code end
      return n
    end
    write(data)
  end
end

--- Copies data out (`COPY ... TO STDOUT`), streamed: each chunk (a row, in
-- the COPY's format) goes to `sink` as it comes, and a sink that blocks
-- holds the server back. A sink that raises (or a cancelled task) aborts
-- the COPY. Blocks; the connection is the copy's until it ends.
-- @function Conn:copy_to
-- @string sql `COPY table TO STDOUT [options]` or `COPY (SELECT ...) TO STDOUT`
-- @param sink a function called with each chunk, or an object with a
-- `write` method (a stream, a file)
-- @return the number of rows copied, or nil, msg, sqlstate
-- @usage local out = {}
-- assert(conn:copy_to("COPY items TO STDOUT (FORMAT csv)", function(row) out[#out + 1] = row end))
function Conn:copy_to(sql, sink)
  check_type(sql, "string", 2, "copy_to")
  local write = sink
  if type(sink) ~= "function" then
    local ok, w = pcall(function() return sink.write end)
    if not ok or type(w) ~= "function" then
      argerror(3, "copy_to", ("function or object with a write method expected, got %s"):format(
        sink == nil and "no value" or type(sink)))
    end
    write = function(data) return sink:write(data) end
  end
  local mode, err, code = self:_copy_start(sql)
  if not mode then return nil, err, code end
  if mode ~= "out" then
    self:_copy_abort("copy_to needs COPY ... TO STDOUT")
    return nil, "copy_to needs COPY ... TO STDOUT", "42601"
  end
  local ok, n, derr, dcode = pcall(drain, self, write)
  if not ok then
    self:_copy_abort()
    error(n, 0)
  end
  return n, derr, dcode
end

-- The pool.

--- A pool of connections, from `loom.pg.pool`.
-- @type Pool
Pool.__index = Pool

-- A leased connection: the connection's methods, with close (and <close>)
-- giving it back to the pool instead of closing it.
local Lease = {}
Lease.__index = Lease

local function live(lease)
  local c = lease._conn
  if c == nil then error("this connection was returned to the pool", 3) end
  return c
end

for name, fn in pairs(Conn) do
  if name ~= "close" then
    Lease[name] = function(self, ...) return fn(live(self), ...) end
  end
end

-- Gives a connection back: kept when it can serve the next user as it is,
-- closed when it is broken, left in a transaction or listening.
local function give_back(pool, c)
  local st = c:status()
  if pool._closed or (st ~= "ready" and st ~= "busy") or c:_txstatus() ~= "idle" or pool._listening[c] then
    pool._listening[c] = nil
    c:close()
    pool._open = pool._open - 1
  else
    pool._idle[#pool._idle + 1] = c
  end
  pool._sem:release()
end

local function release_lease(self)
  local c = self._conn
  if c == nil then return end
  self._conn = nil
  give_back(self._pool, c)
end
Lease.close = release_lease
Lease.__close = release_lease
Lease.__tostring = function(self)
  return self._conn and ("loom.pg pooled connection (%s)"):format(self._conn:status()) or
    "loom.pg pooled connection (returned)"
end

function Lease:listen(channel)
  local ok, err, code = Conn.listen(live(self), channel)
  if ok then self._pool._listening[self._conn] = true end
  return ok, err, code
end

-- Guards that give a connection back at the end of a scope, one per
-- connection, made once.
local Guard = {
  __close = function(g)
    local c = g.conn
    g.conn = nil
    give_back(g.pool, c)
  end,
}

local function acquire_conn(pool)
  if pool._closed then return nil, "closed", "ECLOSED" end
  local sem = pool._sem
  if sem:value() == 0 then
    if pool._timeout then
      local ok = core.timeout(pool._timeout, sem.acquire, sem)
      if not ok then return nil, "timeout", "ETIMEDOUT" end
    else
      sem:acquire()
    end
  else
    sem:acquire()
  end
  local idle = pool._idle
  while #idle > 0 do
    local c = table.remove(idle)
    local st = c:status()
    if st == "ready" or st == "busy" then return c end
    c:close() -- broken while idle (the server restarted ...): never handed out
    pool._open = pool._open - 1
  end
  if pool._closed then
    sem:release()
    return nil, "closed", "ECLOSED"
  end
  local c, err, code = open(pool._conninfo, pool._connect_timeout)
  if not c then
    sem:release()
    return nil, err, code
  end
  pool._open = pool._open + 1
  return c
end

local function guard_of(pool, c)
  local g = pool._guards[c]
  if g == nil then
    g = setmetatable({ pool = pool }, Guard)
    pool._guards[c] = g
  end
  g.conn = c
  return g
end

--- Runs one statement on a connection of the pool (taken, used, given
-- back). Blocks, also while every connection is in use (up to `timeout`).
-- @function Pool:query
-- @string sql one statement
-- @param ... its parameters
-- @return as `Conn:query`; nil, "timeout", "ETIMEDOUT" when no connection
-- came free in time
-- @usage local rows = assert(pool:query("SELECT * FROM users WHERE id = $1", id))
function Pool:query(sql, ...)
  check_type(sql, "string", 2, "query")
  local c, err, code = acquire_conn(self)
  if not c then return nil, err, code end
  local _ <close> = guard_of(self, c)
  return c:query(sql, ...)
end

--- Takes a connection for several statements. Blocks.
-- @function Pool:acquire
-- @return a connection (the Conn methods), given back by `close()` or at
-- the end of a `<close>` variable; or nil, msg, code
-- @usage local conn <close> = assert(pool:acquire())
function Pool:acquire()
  local c, err, code = acquire_conn(self)
  if not c then return nil, err, code end
  return setmetatable({ _conn = c, _pool = self }, Lease)
end

--- Runs `fn(conn, ...)` in a transaction on a connection of the pool (as
-- `Conn:transaction`); the connection goes back afterwards. Blocks.
-- @function Pool:transaction
-- @func fn the body
-- @param ... its arguments after the connection
-- @return fn's results, or nil, msg, code
function Pool:transaction(fn, ...)
  check_type(fn, "function", 2, "transaction")
  local c, err, code = acquire_conn(self)
  if not c then return nil, err, code end
  local lease <close> = setmetatable({ _conn = c, _pool = self }, Lease)
  return Conn.transaction(lease, fn, ...)
end

--- Closes the idle connections, and the others as they are given back;
-- acquiring then gives nil, "closed". Never blocks.
-- @function Pool:close
function Pool:close()
  self._closed = true
  for i = #self._idle, 1, -1 do
    self._idle[i]:close()
    self._idle[i] = nil
    self._open = self._open - 1
  end
end
Pool.__close = Pool.close

--- Connections open now: `open` (idle and in use) and `idle`.
-- @function Pool:stats
-- @return a table `{open =, idle =, max =}`
function Pool:stats()
  return { open = self._open, idle = #self._idle, max = self._max }
end

return pg
