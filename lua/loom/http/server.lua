--- loom.http.server (internal): the HTTP server: a connection's keep-alive
-- loop (the common case in C, conn:serve), handlers' answers, limits and
-- errors, graceful close, TLS and max_connections through loom.net's
-- acceptor; the hand-off of a connection to loom.websocket.
-- @module loom.http
local core = require "loom.core"
local net = require "loom.net"
local args = require "loom.args"
local common = require "loom.http.common"
local router = require "loom.http.router"
local form = require "loom.http.form"

local http = {}
local argerror, check_type, check_port = args.error, args.type, args.port
local headers_mt = common.headers_mt
local traceback, xpcall, setmetatable, rawget = net._traceback, xpcall, setmetatable, rawget

------------------------------------------------------------------ server

local Request = {}

--- A request, as a handler receives it: `method`, `path` (decoded, without
-- the query), `target` (raw), `query` (decoded parameters), `query_string`,
-- `headers` (lower-case names, any spelling finds them), `version`,
-- `remote` (the client's address), `params` (a router's parameters).
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
    self._status = status
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
  if not chunk and err then self._status = status end
  return chunk, err, code, status
end

-- Answers `Expect: 100-continue` the first time the body is asked for: a
-- handler that refuses a request never makes the client send its body.
function Request:_continue()
  self[1]:continue()
end

local request_methods = { body = Request.body, read = Request.read, _continue = Request._continue,
                          json = router.request_json, form = form.request_form }

-- req.query (the query string's parameters, decoded), req.query_string (the
-- raw query), req.version ("1.1") and req.remote (the client's address)
-- are made on first use.
Request.__index = function(req, k)
  if k == "query" then
    local q = common.decode_query(req.query_string)
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
  elseif k == "remote" then
    local host = req[1]:stream():peername()
    rawset(req, "remote", host or false)
    return host
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
  if self._conn:state() ~= "none" then error("status: the response head was already sent", 2) end
  self._conn:status(n)
  return self
end

--- Sets a response header before the head is sent. Never blocks.
-- @tparam string name
-- @param value a string or number, or a list of them (sent several times)
-- @treturn Response res
-- @usage res:header("Set-Cookie", { "a=1", "b=2" })
function Response:header(name, value)
  check_type(name, "string", 1, "header")
  if self._conn:state() ~= "none" then error("header: the response head was already sent", 2) end
  self._conn:header(name, value)
  return self
end

-- The connection decides the framing and whether it goes on after the
-- response (src/http_format.c); this side only reports a write's failure.
local function written(self, ok, err, code)
  if not ok then
    if code == "EINVAL" then error(err, 3) end -- headers that cannot be sent: nothing was
    self._failed = true
  end
  return ok, err, code
end

-- Sends the head of a streamed response now, with headers (a table, kept
-- as it is: no copy per request) joining those set on res.
function Response:_start(status, headers)
  return written(self, self._conn:start(status, headers))
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
  local conn = self._conn
  local state = conn:state()
  if state == "done" then error("write: the response is finished", 2) end
  if state == "none" then
    local ok, err, code = written(self, conn:start())
    if not ok then return nil, err, code end
  end
  if chunk == "" then return true end
  return written(self, conn:body(chunk))
end

--- Ends the response: sends it whole with a Content-Length when nothing
-- was written yet, else the rest and the last chunk. Blocks.
-- @tparam[opt] string body
-- @return true, or nil, msg, code
-- @usage res:finish("done")
function Response:finish(body)
  check_type(body, "string", 1, "finish", true)
  local conn = self._conn
  local state = conn:state()
  if state == "done" then return true end
  if self._sse then self._sse:_stop() end
  if state == "none" then return written(self, conn:respond(nil, nil, body or "")) end
  if body and body ~= "" then
    local ok, err, code = written(self, conn:body(body))
    if not ok then return nil, err, code end -- (the connection has ended the response)
  end
  return written(self, conn:body())
end

--- Sends `value` encoded as JSON (lua-cjson), with
-- `Content-Type: application/json` unless one was set, and ends the
-- response. Blocks.
-- @param value a table (or any value JSON can carry)
-- @tparam[opt] integer status
-- @return true, or nil, msg, code
-- @usage res:json({ id = 7 }, 201)
function Response:json(value, status)
  if status ~= nil then self:status(status) end
  if not self._conn:header("Content-Type") then self:header("Content-Type", "application/json") end
  return self:finish(router._encode(value))
end

--- Starts an event stream (server-sent events) on this response: `200`
-- with `Content-Type: text/event-stream`, `Cache-Control: no-cache`,
-- chunked. A comment is sent after `keepalive` seconds without an event
-- (default 15; false: never). The handler sends until it returns or the
-- client goes (`send` then returns nil, msg, code). Blocks (sends the head).
-- @tparam[opt] table opts `keepalive` (seconds or false)
-- @return an EventStream (`send`, `comment`, `close`), or nil, msg, code
-- @usage app:get("/events", function(req, res)
--   local events = res:sse()
--   for tick in ticks:items() do if not events:send(tick) then break end end
-- end)
function Response:sse(opts)
  return require("loom.http.sse").start(self, opts)
end

-- What a handler returned, when it did not finish the response itself:
-- `status, headers, body`, or a body alone, or nothing (an empty 200). The
-- headers join those set on res (and win); the connection frames it.
local function finish_from(res, a, b, c)
  local conn = res._conn
  local state = conn:state()
  if state == "streaming" then return res:finish() end
  if state == "done" then return true end -- finished by the handler: what it returned is moot
  local ta = math.type(a)
  if ta == "integer" then
    if a < 100 or a > 999 then error(("handler returned status %d (100-999 expected)"):format(a), 0) end
    if b ~= nil and type(b) ~= "table" then
      error(("handler returned a %s as headers (table expected)"):format(type(b)), 0)
    end
    if type(c) == "table" then
      conn:status(a)
      for k, v in pairs(b or {}) do conn:header(k, v) end
      return res:json(c)
    end
    if c ~= nil and type(c) ~= "string" then error(("handler returned a %s as body"):format(type(c)), 0) end
    return written(res, conn:respond(a, b, c or ""))
  elseif type(a) == "string" then
    return res:finish(a)
  elseif type(a) == "table" then -- a table alone: JSON
    return res:json(a)
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
  local gone = o.cancel_on_disconnect ~= false
  local conn = core._http_conn(st, "request", headers_mt, Request, o.max_header_size, o.max_body_size,
    o.keepalive_timeout, o.header_timeout, o.body_timeout, gone)
  entry.conn = conn
  st:set_timeout(o.send_timeout) -- a client that stops reading its responses is dropped
  local handler, log = server._handler, o.on_error
  local info = debug.getinfo(handler, "u")
  local wants_res = info.nparams >= 2 or info.isvararg
  local cut = false
  if server._closing then conn:set_closing() end
  while true do
    -- Plain requests (kept-alive HTTP/1.1, not HEAD, no Expect or Upgrade)
    -- are answered by the C loop (conn:serve); what it hands back (see
    -- src/http_serve.c) takes the general path here.
    local r = conn:serve(handler, traceback, server, wants_res and Response or nil)
    if r.unsent then cut = true break end -- a response could not be sent
    local req, ok, a, b, c, res = r.req, r.ok, r[1], r[2], r[3], r.res
    if not req then
      if r.status then conn:respond(r.status, plain, error_text[r.status] or "error\n") end
      break
    end
    if not r.ran then
      local expect = rawget(req.headers, "expect")
      if expect and expect:lower() ~= "100-continue" then
        conn:respond(417, plain, "expectation failed\n")
        break
      end
      res = setmetatable({ _conn = conn, _req = req, _server = server }, Response)
      if gone then st:_cancel_on_close(true) end
      ok, a, b, c = xpcall(handler, traceback, req, wants_res and res or nil)
      st:_cancel_on_close(false)
    end
    if req._taken then -- the handler took the connection (loom.websocket.upgrade)
      local cancelled = not ok and core.is_cancelled(a)
      if req._ws then pcall(req._ws.close, req._ws, ok and 1000 or cancelled and 1001 or 1011) end
      if cancelled then error(a, 0) end
      if not ok then log(("http handler failed (%s %s): %s"):format(req.method, req.target, tostring(a))) end
      break
    end
    res = res or setmetatable({ _conn = conn, _req = req, _server = server }, Response)
    if ok then
      ok, a = pcall(finish_from, res, a, b, c)
      if not ok then a = traceback(a, 1) end
    end
    if not ok then
      if core.is_cancelled(a) then error(a, 0) end
      -- loom.http.error answers with its status; a body that could not be
      -- read (too large, malformed, too slow) with its own; anything else
      -- is the server's fault
      local code, message = router._answer_of(a)
      code = code or req._status or 500
      if code == 500 then
        log(("http handler failed (%s %s): %s"):format(req.method, req.target, tostring(a)))
      end
      if res._sse then res._sse:_stop() end
      if conn:state() ~= "none" then cut = true break end -- the head is out: the client learns by the reset
      conn:clear() -- what the handler set is not for this answer
      if message and server._app then -- the router's way of answering errors
        local ok2, e2 = pcall(function()
          return finish_from(res, router._error_answer(server._app, req, code, message))
        end)
        if not ok2 then log(("http error answer failed: %s"):format(tostring(e2))) end
      else
        written(res, conn:respond(code, plain, message and message .. "\n" or error_text[code] or "error\n"))
      end
    end
    if res._failed then cut = true break end
    if not conn:keep() then break end -- (the connection decided, with the response's head)
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

--- Stops accepting (connections the kernel already queued are still
-- taken and answered), closes idle keep-alive connections at once and,
-- called from a task, waits until the requests in flight are answered
-- (their responses say `Connection: close`); after `timeout` seconds the
-- handlers still running are cancelled. A second call waits as the first.
-- Blocks while requests are in flight.
-- @tparam[opt] number timeout seconds
-- @usage loom.signal.wait("SIGTERM"); server:close(10)
function Server:close(timeout)
  check_type(timeout, "number", 1, "close", true)
  return self:_close(timeout, 0)
end

-- Closes idle keep-alive connections (those that have served a request
-- and hold no bytes of another).
local function close_idle(server)
  for entry in pairs(server._conns) do
    if entry.conn then
      local idle, served = entry.conn:idle()
      if idle and served > 0 then entry.stream:close() end
    end
  end
end

-- close, with `grace` seconds for idle keep-alive connections: a request
-- that arrives on one meanwhile is answered (with Connection: close), so a
-- client that sends at once on a kept-alive connection (a load balancer, a
-- benchmark) loses nothing when a worker is replaced; 0 closes them at once
-- (their clients retry, as HTTP lets them).
function Server:_close(timeout, grace)
  if self._closing then -- a second caller waits as the first does
    if next(self._conns) and core.current() then self._drained:wait(timeout) end
    return
  end
  self._closing = true
  self._stop_accepting()
  -- a connection not yet past its first request gets its answer
  for entry in pairs(self._conns) do
    if entry.conn then entry.conn:set_closing() end
  end
  if grace > 0 and next(self._conns) then
    core.spawn(function()
      core.sleep(grace)
      close_idle(self)
    end).name = "http idle close"
  else
    close_idle(self)
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
  local app, given = nil, handler
  if getmetatable(handler) == router.Router then -- a router answers through its __call
    app = handler
    local call = router.Router.__call
    handler = function(req, res) return call(app, req, res) end
  end
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
  if o.workers ~= nil then
    return require("loom.workers")._serve("serve", host, port, o, function(wo)
      local server, e, c = http.serve(host, port, given, wo)
      if not server then return nil, nil, e, c end
      return server, function(timeout) server:_close(timeout, 1) end
    end)
  end
  local listener, err, code = net.tcp.listen(host, port, { backlog = o.backlog, reuseport = o.reuseport,
                                                           _listen_fd = o._listen_fd })
  if not listener then return nil, err, code end
  local server = setmetatable({ _listener = listener, _handler = handler, _opts = o, _conns = {},
                                _drained = core.event(), _app = app }, Server)
  -- each connection is tracked while it lives, so that close can find the
  -- idle ones and wait for the others
  local _, stop = net._run_server(listener, function(st)
    local entry = { stream = st, task = core.current() }
    server._conns[entry] = true
    local _ <close> = setmetatable({}, { __close = function()
      server._conns[entry] = nil
      if server._closing and not next(server._conns) then server._drained:set() end
    end })
    serve_connection(server, st, entry)
  end, "http server", o.on_error, o.max_connections, function()
    close_idle(server) -- full: idle keep-alive connections make room first
  end, tls_ctx, hs_timeout)
  server._stop_accepting = stop
  return server
end


return http
