--- loom.http: an HTTP/1.1 server and client.
-- Messages are parsed and formatted in C (src/http.c, on http_parser); this
-- module runs the server's connections (keep-alive, pipelining, limits,
-- handler errors, graceful close) and the client's pool of kept-alive
-- connections per host (limit, reuse, retry on a stale connection,
-- redirects, total timeout). Failures return `nil, msg, code`.
-- @module loom.http
local core = require "loom.core"
local net = require "loom.net"
local tls = require "loom.tls"

local http = {}

-- framing flags of conn:respond, as src/http.c defines them
local R_CLOSE, R_KEEP, R_CHUNKED, R_NOBODY, R_RAW = 1, 2, 4, 8, 16

local args = require "loom.args"
local argerror, check_type, check_port = args.error, args.type, args.port

-- Header tables hold lower-case names; any other spelling finds them too.
local headers_mt = core._http_headers_mt
headers_mt.__index = function(t, k)
  if type(k) == "string" then
    local l = k:lower()
    if l ~= k then return rawget(t, l) end
  end
end

local unescape = core._http_unescape
local traceback, xpcall, setmetatable, rawget = debug.traceback, xpcall, setmetatable, rawget

--- Decodes an application/x-www-form-urlencoded string (a query string);
-- a repeated name keeps the last value. Never blocks.
-- @tparam string s
-- @treturn table
-- @usage loom.http.decode_query("a=1&b=x+y") --> {a = "1", b = "x y"}
function http.decode_query(s)
  check_type(s, "string", 1, "decode_query")
  local q = {}
  for pair in s:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    q[unescape(k, true)] = unescape(v, true)
  end
  return q
end

local function escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--- Encodes a table as a query string (names sorted, so the result is
-- stable). Never blocks.
-- @tparam table t
-- @treturn string
-- @usage loom.http.encode_query({ q = "a b", n = 2 }) --> "n=2&q=a%20b"
function http.encode_query(t)
  check_type(t, "table", 1, "encode_query")
  local keys, out = {}, {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = t[k]
    if v == nil then v = t[tonumber(k)] end
    out[#out + 1] = escape(k) .. "=" .. escape(v)
  end
  return table.concat(out, "&")
end

------------------------------------------------------------------ server

local Request = {}

--- A request, as a handler receives it: `method`, `path` (decoded, without
-- the query), `target` (raw), `query` (decoded parameters), `query_string`,
-- `headers` (lower-case names, any spelling finds them), `version`.
-- @type Request

--- The whole request body, read once and kept. Blocks. Over the server's
-- max_body_size the answer is 413 (also if the handler raises after it).
-- @return a string ("" when there is none), or nil, msg, code, status
-- @usage local data = cjson.decode(assert(req:body()))
function Request:body()
  if self._body then return self._body end
  self:_continue()
  local body, err, code, status = self[1]:read(true)
  if not body then
    self._broken, self._status = true, status
    return nil, err, code, status
  end
  self._body = body
  return body
end

--- The next piece of the body as it arrives. Blocks.
-- @return a string, nil at the end; or nil, msg, code, status
-- @usage for chunk in req.read, req do file:write(chunk) end
function Request:read()
  self:_continue()
  local chunk, err, code, status = self[1]:read()
  if not chunk and err then self._broken, self._status = true, status end
  return chunk, err, code, status
end

-- Answers `Expect: 100-continue` the first time the body is asked for: a
-- handler that refuses a request never makes the client send its body.
function Request:_continue()
  if self._expect and not self._continued then
    self._continued = true
    self[1]:stream():write("HTTP/1.1 100 Continue\r\n\r\n")
  end
end

local request_methods = { body = Request.body, read = Request.read, _continue = Request._continue }

-- req.query (the query string's parameters, decoded), req.query_string (the
-- raw query) and req.version ("1.1") are made on first use.
Request.__index = function(req, k)
  if k == "query" then
    local q = http.decode_query(req.query_string)
    rawset(req, "query", q)
    return q
  elseif k == "query_string" then
    local qs = req.target:match("%?([^#]*)") or ""
    rawset(req, "query_string", qs)
    return qs
  elseif k == "version" then
    local v = req[1]:info()
    rawset(req, "version", v)
    return v
  end
  return request_methods[k]
end

local Response = {}
Response.__index = Response

--- A response under construction, the handler's second argument (for
-- handlers declared with it).
-- @type Response

--- Sets the status (default 200) before the head is sent. Never blocks.
-- @tparam integer n 100-999
-- @treturn Response res, for chaining
-- @usage res:status(404):header("Content-Type", "text/plain"):finish("no")
function Response:status(n)
  if math.type(n) ~= "integer" or n < 100 or n > 999 then argerror(1, "status", "status code expected") end
  if self._state then error("status: the response head was already sent", 2) end
  self._code = n
  return self
end

--- Sets a response header before the head is sent. Never blocks.
-- @tparam string name
-- @param value a string or number, or a list of them (sent several times)
-- @treturn Response res
-- @usage res:header("Set-Cookie", { "a=1", "b=2" })
function Response:header(name, value)
  check_type(name, "string", 1, "header")
  if self._state then error("header: the response head was already sent", 2) end
  local h = self._headers
  if not h then h = {}; self._headers = h end
  h[name] = value
  return self
end

function Response:_flags(streaming)
  local req, flags = self._req, 0
  local version, keep = self._conn:info()
  -- (a handler's own "Connection: close" is seen by conn:respond, which then
  -- ends the connection after this response)
  keep = keep and not req.upgrade and not self._server._closing and not req._broken
  if keep and req._expect and not req._continued and not self._conn:done() then keep = false end
  if streaming and version == "1.0" and not self:_has_length() then keep = false end
  self._keep = keep
  if not keep then flags = R_CLOSE elseif version == "1.0" then flags = R_KEEP end
  if req.method == "HEAD" or self._code == 204 or self._code == 304 then flags = flags | R_NOBODY end
  return flags
end

function Response:_has_length()
  local h = self._headers
  return h and (h["content-length"] or h["Content-Length"]) ~= nil
end

local function written(self, ok, err, code)
  if not ok then
    if code == "EINVAL" then
      self._state = nil
      error(err, 3)
    end
    self._failed = true
  end
  return ok, err, code
end

--- Sends part of the body; the head goes first, with
-- `Transfer-Encoding: chunked` unless a Content-Length header was set.
-- Blocks (backpressure, up to the server's send_timeout).
-- @tparam string chunk
-- @return true, or nil, msg, code (the client went away)
-- @raise for a header that cannot be sent (CR or LF in a value ...)
-- @usage for row in rows() do res:write(row .. "\n") end
function Response:write(chunk)
  check_type(chunk, "string", 1, "write")
  if self._state == "done" then error("write: the response is finished", 2) end
  if not self._state then
    local flags = self:_flags(true)
    if self:_has_length() or self._req.version == "1.0" then
      self._framing = "raw"
      flags = flags | R_RAW
    else
      self._framing = "chunked"
      flags = flags | R_CHUNKED
    end
    self._nobody = flags & R_NOBODY ~= 0
    self._state = "streaming"
    local ok, err, code = written(self, self._conn:respond(self._code, self._headers, nil, flags))
    if not ok then return nil, err, code end
  end
  if self._nobody or chunk == "" then return true end
  if self._framing == "chunked" then return written(self, self._conn:chunk(chunk)) end
  return written(self, self._conn:stream():write(chunk))
end

--- Ends the response: sends it whole with a Content-Length when nothing
-- was written yet, else the rest and the last chunk. Blocks.
-- @tparam[opt] string body
-- @return true, or nil, msg, code
-- @usage res:finish("done")
function Response:finish(body)
  check_type(body, "string", 1, "finish", true)
  if self._state == "done" then return true end
  if not self._state then
    self._state = "done"
    return written(self, self._conn:respond(self._code, self._headers, body or "", self:_flags(false)))
  end
  if body and body ~= "" then
    local ok, err, code = self:write(body)
    if not ok then self._state = "done"; return nil, err, code end
  end
  self._state = "done"
  if self._framing == "chunked" and not self._nobody then return written(self, self._conn:chunk()) end
  return true
end

local function merge(into, from)
  if not into then return from end
  if from then for k, v in pairs(from) do into[k] = v end end
  return into
end

-- What a handler returned, when it did not finish the response itself:
-- `status, headers, body`, or a body alone, or nothing (an empty 200).
local function finish_from(res, a, b, c)
  if res._state == "streaming" then return res:finish() end
  if res._state == "done" then return true end -- finished by the handler: what it returned is moot
  local ta = math.type(a)
  if ta == "integer" then
    if a < 100 or a > 999 then error(("handler returned status %d (100-999 expected)"):format(a), 0) end
    res._code = a
    if b ~= nil and type(b) ~= "table" then
      error(("handler returned a %s as headers (table expected)"):format(type(b)), 0)
    end
    res._headers = merge(res._headers, b)
    if c ~= nil and type(c) ~= "string" then error(("handler returned a %s as body"):format(type(c)), 0) end
    return res:finish(c)
  elseif type(a) == "string" then
    return res:finish(a)
  elseif a ~= nil then
    error(("handler returned a %s (expected status, headers, body)"):format(type(a)), 0)
  end
  return res:finish()
end

local error_text = {
  [400] = "bad request\n", [408] = "request timeout\n", [413] = "request body too large\n",
  [431] = "request header fields too large\n", [500] = "internal server error\n",
  [505] = "HTTP version not supported\n",
}

local plain = { ["content-type"] = "text/plain; charset=utf-8" }

-- One connection: requests in order, each handler run in this task (so
-- pipelined responses go out in request order), until the client closes,
-- asks to, idles past keepalive_timeout, or sends something wrong.
local function serve_connection(server, st, entry)
  local o = server._opts
  local conn = core._http_conn(st, "request", headers_mt, Request, o.max_header_size, o.max_body_size,
    o.keepalive_timeout, o.header_timeout, o.body_timeout)
  entry.conn = conn
  st:set_timeout(o.send_timeout) -- a client that stops reading its responses is dropped
  local handler, log = server._handler, o.on_error
  local info = debug.getinfo(handler, "u")
  local wants_res = info.nparams >= 2 or info.isvararg
  local cut = false
  while true do
    -- Plain requests (kept-alive HTTP/1.1, not HEAD, no Expect or Upgrade)
    -- are answered by the C loop (conn:serve); whatever it hands back takes
    -- the general path here.
    local req, fast, ok, a, b, c, res = conn:serve(handler, traceback, server, wants_res and Response or nil)
    if req == false then cut = true break end -- a response could not be sent
    local ran = fast -- on failure: nil, msg, code, status, so the status is in a
    if not req then
      if a then conn:respond(a, plain, error_text[a] or "error\n", R_CLOSE) end
      break
    end
    if not fast then
      local expect = rawget(req.headers, "expect")
      if expect then
        if expect:lower() ~= "100-continue" then
          conn:respond(417, plain, "expectation failed\n", R_CLOSE)
          break
        end
        req._expect = true
      end
    end
    if not ran then
      res = setmetatable({ _conn = conn, _req = req, _code = 200, _server = server }, Response)
      ok, a, b, c = xpcall(handler, traceback, req, wants_res and res or nil)
    end
    if req._taken then -- the handler took the connection (loom.websocket.upgrade)
      local cancelled = not ok and core.is_cancelled(a)
      if req._ws then pcall(req._ws.close, req._ws, ok and 1000 or cancelled and 1001 or 1011) end
      if cancelled then error(a, 0) end
      if not ok then log(("http handler failed (%s %s): %s"):format(req.method, req.target, tostring(a))) end
      break
    end
    res = res or setmetatable({ _conn = conn, _req = req, _code = 200, _server = server }, Response)
    if ok then
      ok, a = pcall(finish_from, res, a, b, c)
      if not ok then a = traceback(a, 1) end
    end
    if not ok then
      if core.is_cancelled(a) then error(a, 0) end
      -- a body that could not be read (too large, malformed, too slow)
      -- answers with its own status; anything else is the server's fault
      local code = req._status or 500
      if code == 500 then
        log(("http handler failed (%s %s): %s"):format(req.method, req.target, tostring(a)))
      end
      if res._state then cut = true break end -- the head is out: the client learns by the reset
      res._code, res._headers, res._state = code, plain, nil
      res:finish(error_text[code] or "error\n")
    end
    if res._failed then cut = true break end
    if not res._keep or server._closing then break end
  end
  -- a response cut short must not reach the client as a clean end
  if cut then st:abort() else st:close() end
end

local Server = {}
Server.__index = Server

--- An HTTP server, from `http.serve`.
-- @type Server

--- Where the server listens. Never blocks.
-- @return host, port
-- @usage local _, port = server:address()
function Server:address()
  return self._listener:address()
end

--- Stops accepting, closes idle keep-alive connections at once and, called
-- from a task, waits until the requests in flight are answered (their
-- responses say `Connection: close`); after `timeout` seconds the handlers
-- still running are cancelled. Blocks while requests are in flight.
-- @tparam[opt] number timeout seconds
-- @usage loom.signal.wait("SIGTERM"); server:close(10)
function Server:close(timeout)
  check_type(timeout, "number", 1, "close", true)
  if self._closing then return end
  self._closing = true
  self._listener:close()
  for entry in pairs(self._conns) do
    if entry.conn then entry.conn:set_closing() end
    if not entry.conn or entry.conn:idle() then entry.stream:close() end
  end
  if not next(self._conns) or not core.current() then return end
  if not self._drained:wait(timeout) then
    for entry in pairs(self._conns) do entry.task:cancel("server closed") end
    self._drained:wait()
  end
end

local function setdefault(opts, k, v)
  if opts[k] == nil then opts[k] = v end
end

--- Functions.
-- @section functions

--- Serves HTTP/1.1 on host:port: `handler(req, res)` runs for each request
-- in its connection's task (so pipelined requests are answered in order),
-- and answers by returning `status, headers, body` (or a body string, or
-- nothing: an empty 200) or through `res`. Keep-alive, pipelining, chunked
-- bodies, `Expect: 100-continue`, HEAD. A handler's error gives a 500 (its
-- traceback goes to `on_error`) and the server goes on. May block (to
-- resolve host).
-- @tparam string host
-- @tparam integer port 0 picks a free one
-- @tparam function handler `function(req [, res])`; declared without `res`,
-- none is made (faster)
-- @tparam[opt] table opts `max_header_size` (16 KiB: 431), `max_body_size`
-- (1 MiB: 413), `header_timeout` (10 s: 408), `keepalive_timeout` (5 s),
-- `body_timeout` (30 s per read), `send_timeout` (30 s), `on_error` (a
-- function given each handler error; default: stderr), `backlog`,
-- `reuseport`, `max_connections` (10,000: at that many, idle keep-alive
-- connections are closed first, then accepting pauses until one ends),
-- `tls` (a loom.tls context or its fields: HTTPS), `handshake_timeout` (10 s)
-- @return a Server, or nil, msg, code
-- @usage loom.http.serve("0.0.0.0", 8080, function(req)
--   return 200, { ["Content-Type"] = "text/plain" }, "hello " .. req.path
-- end)
function http.serve(host, port, handler, opts)
  check_type(host, "string", 1, "serve")
  check_port(port, 2, "serve")
  check_type(handler, "function", 3, "serve")
  check_type(opts, "table", 4, "serve", true)
  if opts and opts.max_connections ~= nil and (math.type(opts.max_connections) ~= "integer" or opts.max_connections < 1) then
    argerror(4, "serve", "max_connections must be a positive integer")
  end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  setdefault(o, "max_header_size", 16 * 1024)
  setdefault(o, "max_body_size", 1024 * 1024)
  setdefault(o, "header_timeout", 10)
  setdefault(o, "keepalive_timeout", 5)
  setdefault(o, "body_timeout", 30)
  setdefault(o, "send_timeout", 30)
  setdefault(o, "on_error", net._log)
  local tls_ctx, hs_timeout = net._server_tls(opts, "serve")
  local listener, err, code = net.tcp.listen(host, port, { backlog = o.backlog, reuseport = o.reuseport })
  if not listener then return nil, err, code end
  local server = setmetatable({ _listener = listener, _handler = handler, _opts = o, _conns = {},
                                _drained = core.event() }, Server)
  -- each connection is tracked while it lives, so that close can find the
  -- idle ones and wait for the others
  net._run_server(listener, function(st)
    local entry = { stream = st, task = core.current() }
    server._conns[entry] = true
    local _ <close> = setmetatable({}, { __close = function()
      server._conns[entry] = nil
      if server._closing and not next(server._conns) then server._drained:set() end
    end })
    serve_connection(server, st, entry)
  end, "http server", o.on_error, o.max_connections, function()
    -- full: idle keep-alive connections make room first
    for entry in pairs(server._conns) do
      if entry.conn then
        local idle, served = entry.conn:idle()
        if idle and served > 0 then entry.stream:close() end
      end
    end
  end, tls_ctx, hs_timeout)
  return server
end

------------------------------------------------------------------ client

local ClientResponse = {}

--- A client's response: `status`, `headers` (lower-case names, any
-- spelling finds them), `body` (unless streamed), `version`, `url` (after
-- redirects).
-- @type ClientResponse

--- The next piece of a streamed body (`stream = true`); at its end the
-- connection returns to the pool. Blocks.
-- @return a string, nil at the end; or nil, msg, code
-- @usage for chunk in res.read, res do out:write(chunk) end
function ClientResponse:read()
  local lease = self._lease
  if not lease then return nil end
  local chunk, err, code = lease.conn:read()
  if chunk then return chunk end
  self._lease = nil
  lease.reusable = err == nil and self.keep_alive
  lease:release()
  return nil, err, code
end

--- Gives up the rest of a streamed body (its connection is closed rather
-- than reused). Also `<close>`. Never blocks.
-- @usage local res <close> = assert(loom.http.get(url, { stream = true }))
function ClientResponse:close()
  local lease = self._lease
  if lease then
    self._lease = nil
    lease.reusable = false
    lease:release()
  end
end

local client_methods = { read = ClientResponse.read, close = ClientResponse.close }
ClientResponse.__index = client_methods
ClientResponse.__close = ClientResponse.close

local pools = {}
local default_limit = 64
local CLIENT_MAX_BODY = 64 * 1024 * 1024 -- a whole body in memory, unless stream = true
local MAX_INTERIM = 10

local Lease = {}
Lease.__index = Lease

function Lease:release()
  if self.released then return end
  self.released = true
  local pool = self.pool
  if self.reusable and self.conn:alive() then
    pool.idle[#pool.idle + 1] = self.conn
  elseif self.conn then
    self.conn:stream():close()
  end
  pool.sem:release()
end

Lease.__close = function(self) if not self.moved then self:release() end end

local function get_pool(key, limit)
  key = key .. "/" .. limit
  local pool = pools[key]
  if not pool then
    pool = { idle = {}, sem = core.semaphore(limit), limit = limit }
    pools[key] = pool
  end
  return pool
end

-- The client's TLS settings for an https URL: ALPN http/1.1 and the user's
-- `tls` (a context or its fields; verification stays on unless it says
-- verify = false).
local tls_clients = setmetatable({}, { __mode = "k" })
local default_tls

local function client_tls(opts)
  local t = opts.tls
  if t == nil then
    default_tls = default_tls or tls._context_of({ alpn = { "http/1.1" } })
    return default_tls
  end
  if getmetatable(t) == core._TLSContext or t.context then return tls._context_of(t, 1, "request") end
  local ctx = tls_clients[t]
  if not ctx then
    local f = { alpn = { "http/1.1" } }
    for k, v in pairs(t) do if k ~= "alpn" then f[k] = v end end
    ctx = tls._context_of(f, 1, "request")
    tls_clients[t] = ctx
  end
  return ctx
end

-- A connection to host:port from the pool (reused when one is idle and
-- still open), within the per-host limit; https connections are TLS, with
-- the pool's last session offered for resumption. May block.
local function lease_conn(pool, u, opts)
  local host, port = u.host, u.port
  pool.sem:acquire()
  local lease = setmetatable({ pool = pool }, Lease)
  local idle = pool.idle
  while #idle > 0 do
    local conn = table.remove(idle)
    if conn:alive() then
      lease.conn, lease.reused = conn, true
      return lease
    end
    conn:stream():close()
  end
  local ok, st, err, code = pcall(net.tcp.connect, host, port)
  if ok and st and u.scheme == "https" then
    local raw = st
    ok, st, err, code = pcall(tls.wrap, raw, { context = u.ctx, servername = host, _session = pool.session })
    if not ok then raw:abort() end
    if ok and st then pool.session = tls._session(st) or pool.session end
  end
  if not ok or not st then
    lease.released = true
    pool.sem:release()
    if not ok then error(st, 0) end
    return nil, err, code
  end
  lease.conn = core._http_conn(st, "response", headers_mt, ClientResponse)
  return lease
end

local idempotent = { GET = true, HEAD = true, OPTIONS = true, PUT = true, DELETE = true, TRACE = true }
local stale = { EOF = true, ECONNRESET = true, EPIPE = true, ECLOSED = true }

-- One exchange on one connection: response, or nil, msg, code, retryable.
local function exchange(pool, u, method, opts)
  local lease <close>, err, code = lease_conn(pool, u, opts)
  if not lease then return nil, err, code end
  local conn = lease.conn
  local ok
  local payload = opts.body
  if payload == false then payload = nil end
  ok, err, code = conn:request(method, u.target, u.hostport, opts.headers, payload)
  if ok then
    local limit = opts.max_body_size or (not opts.stream and CLIENT_MAX_BODY) or nil
    local res
    -- interim responses (100 Continue, 103 Early Hints) are skipped, a
    -- bounded number of them; 101 is final (the connection changed hands)
    for _ = 0, MAX_INTERIM do
      conn:expect_head(method == "HEAD", limit)
      res, err, code = conn:next()
      if not res or res.status >= 200 or res.status == 101 then break end
      res, err, code = nil, "too many interim (1xx) responses", "EPROTO"
    end
    if res then
      if opts.stream then
        lease.moved = true
        res._lease = lease
        lease.reusable = res.keep_alive
        if conn:done() then res:read() end
        return res
      end
      local body
      body, err, code = conn:read(true)
      if body then
        res.body = body
        lease.reusable = res.keep_alive
        return res
      end
    end
  end
  return nil, err, code, lease.reused and stale[code] and idempotent[method]
end

local default_port = { http = 80, https = 443 }

local function parse_url(url)
  local scheme, host, port, target, userinfo = core._http_parse_url(url)
  if not scheme then return nil, host, port end
  scheme = scheme:lower()
  if not default_port[scheme] then return nil, ("unsupported URL scheme '%s'"):format(scheme), "EINVAL" end
  local u = { scheme = scheme, host = host, port = port or default_port[scheme], target = target, userinfo = userinfo }
  local h = host:find(":", 1, true) and "[" .. host .. "]" or host
  u.hostport = port and port ~= default_port[scheme] and h .. ":" .. port or h
  u.key = scheme .. "://" .. host .. ":" .. u.port
  return u
end

local function resolve(base, location)
  if location:match("^%a[%w+.-]*://") then return location end
  if location:sub(1, 2) == "//" then return base.scheme .. ":" .. location end
  local origin = base.scheme .. "://" .. base.hostport
  if location:sub(1, 1) == "/" then return origin .. location end
  local dir = base.target:match("^([^?]*/)") or "/"
  return origin .. dir .. location
end

local function perform(opts)
  local method = (opts.method or "GET"):upper()
  local url = opts.url
  local redirects = opts.redirects == nil and 5 or opts.redirects
  for _ = 0, redirects do
    local u, err, code = parse_url(url)
    if not u then return nil, err, code end
    if opts.query then
      u.target = u.target .. (u.target:find("?", 1, true) and "&" or "?") .. http.encode_query(opts.query)
    end
    -- a TLS connection is only reused under the trust it was verified with
    if u.scheme == "https" then u.ctx = client_tls(opts); u.key = u.key .. "|" .. tostring(u.ctx) end
    local pool = get_pool(u.key, opts.max_per_host or default_limit)
    local res, retry
    res, err, code, retry = exchange(pool, u, method, opts)
    if not res and retry then res, err, code = exchange(pool, u, method, opts) end
    if not res then return nil, err, code end
    local location = res.headers.location
    local s = res.status
    if not (location and (s == 301 or s == 302 or s == 303 or s == 307 or s == 308)) or redirects == 0 then
      res.url = url
      return res
    end
    if opts.stream then res:close() end
    url = resolve(u, location)
    if s == 303 or ((s == 301 or s == 302) and method ~= "GET" and method ~= "HEAD") then
      method = method == "HEAD" and "HEAD" or "GET"
      opts = setmetatable({ body = false }, { __index = opts })
    end
  end
  return nil, ("too many redirects (more than %d)"):format(redirects), "EREDIRECT"
end

--- Client functions.
-- @section client

--- Makes an HTTP request. Connections are kept alive and pooled per host;
-- a pooled connection the server closed meanwhile is replaced and the
-- request retried once (idempotent methods). Blocks.
-- @tparam table opts `url` (http or https: TLS verified by default),
-- `tls` (for https: a loom.tls context or its fields, e.g. `ca`, `verify =
-- false`), `method` ("GET"), `headers`, `body` (a
-- string), `query` (a table appended to the URL), `timeout` (30 s for the
-- whole exchange; with stream, until the head), `redirects` (5; 0 to not
-- follow), `stream` (read the body with `res:read()`), `max_per_host` (64
-- connections), `max_body_size` (default 64 MiB, or none with stream;
-- over it: nil, "body too large", "EBODY"). Interim responses (1xx but
-- 101) are skipped.
-- @return a ClientResponse, or nil, msg, code ("ETIMEDOUT", "ECONNREFUSED",
-- "EPROTO", "ECERT", "EINVAL", "EREDIRECT" ...)
-- @usage local res = assert(loom.http.request{ method = "POST", url = api .. "/items",
--   headers = { ["Content-Type"] = "application/json" }, body = json, timeout = 5 })
function http.request(opts)
  check_type(opts, "table", 1, "request")
  check_type(opts.url, "string", 1, "request")
  if opts.method ~= nil and (type(opts.method) ~= "string" or not opts.method:match("^%a+$")) then
    argerror(1, "request", "method must be a word such as \"GET\"")
  end
  check_type(opts.headers, "table", 1, "request", true)
  if opts.body ~= nil and type(opts.body) ~= "string" then
    argerror(1, "request", ("body: string expected, got %s"):format(type(opts.body)))
  end
  check_type(opts.query, "table", 1, "request", true)
  check_type(opts.timeout, "number", 1, "request", true)
  local timeout = opts.timeout or 30
  if timeout <= 0 then return nil, "timeout", "ETIMEDOUT" end
  local ok, res, err, code = core.timeout(timeout, perform, opts)
  if not ok then return nil, "timeout", "ETIMEDOUT" end
  return res, err, code
end

--- A GET request: `http.request` with `url` and `opts`. Blocks.
-- @tparam string url
-- @tparam[opt] table opts as request's
-- @return a ClientResponse, or nil, msg, code
-- @usage local res, err = loom.http.get("http://127.0.0.1:8080/health", { timeout = 2 })
function http.get(url, opts)
  check_type(url, "string", 1, "get")
  check_type(opts, "table", 2, "get", true)
  local o = { url = url, method = "GET" }
  for k, v in pairs(opts or {}) do if k ~= "url" then o[k] = v end end
  local res, err, code = http.request(o) -- not a tail call: errors name http.get
  return res, err, code
end

--- Closes the pooled idle client connections (before `loom.run` ends, so
-- that none is left open). Never blocks.
-- @usage loom.http.close_idle()
function http.close_idle()
  for key, pool in pairs(pools) do
    for _, conn in ipairs(pool.idle) do conn:stream():close() end
    pool.idle = {}
    pools[key] = nil
  end
end

return http
