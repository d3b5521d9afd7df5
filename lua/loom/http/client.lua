--- loom.http.client (internal): the HTTP client: pools of kept-alive
-- connections per scheme, host, port and trust (limit, reuse, a retry on a
-- stale connection, TLS sessions resumed), redirects, interim responses,
-- body limits and the total timeout.
-- @module loom.http
local core = require "loom.core"
local net = require "loom.net"
local tls = require "loom.tls"
local args = require "loom.args"
local common = require "loom.http.common"

local http = {}
local argerror, check_type = args.error, args.type
local headers_mt = common.headers_mt
local setmetatable = setmetatable

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

--- The body decoded from JSON (lua-cjson). Never blocks (the body was
-- read; not for streamed responses).
-- @return the value, or nil, msg, "EPROTO" for a body that is not JSON
-- @usage local user = assert(assert(loom.http.get(api .. "/users/1")):json())
function ClientResponse:json()
  if self.body == nil then return nil, "no body (a streamed response)", "EINVAL" end
  local ok, v = pcall(require("loom.http.router")._decode, self.body)
  if not ok then return nil, "invalid JSON: " .. tostring(v):gsub("^.-:%d+: ", ""), "EPROTO" end
  return v
end

local client_methods = { read = ClientResponse.read, close = ClientResponse.close, json = ClientResponse.json }
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

-- The pool for key in `within` (a session's pools, or the module's).
local function get_pool(key, limit, within)
  within = within or pools
  key = key .. "/" .. limit
  local pool = within[key]
  if not pool then
    pool = { idle = {}, sem = core.semaphore(limit), limit = limit }
    within[key] = pool
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
  -- compressed bodies asked for (and decoded below) unless the caller
  -- streams the body or chose its own Accept-Encoding
  local headers, decode = opts.headers, not opts.stream and opts.decompress ~= false and method ~= "HEAD"
  if decode then
    local given = false
    for k in pairs(headers or {}) do
      if type(k) == "string" and k:lower() == "accept-encoding" then given = true end
    end
    if given then
      decode = false
    else
      local h = { ["Accept-Encoding"] = "gzip, deflate" }
      for k, v in pairs(headers or {}) do h[k] = v end
      headers = h
    end
  end
  ok, err, code = conn:request(method, u.target, u.hostport, headers, payload)
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
        lease.reusable = res.keep_alive
        local enc = decode and res.headers["content-encoding"]
        enc = enc and enc:lower():match("^%s*(.-)%s*$")
        if enc == "gzip" or enc == "x-gzip" or enc == "deflate" then
          body, err, code = core._inflate(body, enc, limit or CLIENT_MAX_BODY)
          if not body then return nil, err, code end
        end
        res.body = body
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

local function perform_once(opts)
  local method = (opts.method or "GET"):upper()
  local url = opts.url
  local redirects = opts.redirects == nil and 5 or opts.redirects
  for _ = 0, redirects do
    local u, err, code = parse_url(url)
    if not u then return nil, err, code end
    if opts.query then
      u.target = u.target .. (u.target:find("?", 1, true) and "&" or "?") .. common.encode_query(opts.query)
    end
    -- a TLS connection is only reused under the trust it was verified with
    if u.scheme == "https" then u.ctx = client_tls(opts); u.key = u.key .. "|" .. tostring(u.ctx) end
    local pool = get_pool(u.key, opts.max_per_host or default_limit, opts._pools)
    local jar, o = opts._jar, opts
    local cookie = jar and jar:_header(u)
    if cookie then -- the session's cookies for this URL join the caller's headers
      local h = { Cookie = cookie }
      for k, v in pairs(opts.headers or {}) do
        if type(k) == "string" and k:lower() == "cookie" then h.Cookie = cookie .. "; " .. v else h[k] = v end
      end
      o = setmetatable({ headers = h }, { __index = opts })
    end
    local res, retry
    res, err, code, retry = exchange(pool, u, method, o)
    if not res and retry then res, err, code = exchange(pool, u, method, o) end
    if not res then return nil, err, code end
    if jar then jar:_store(u, res.headers["set-cookie"]) end
    local location = res.headers.location
    local s = res.status
    if not (location and (s == 301 or s == 302 or s == 303 or s == 307 or s == 308)) or redirects == 0 then
      res.url = u.scheme .. "://" .. u.hostport .. u.target -- the query included
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

local retry_codes = { ECONNREFUSED = true, ECONNRESET = true, EPIPE = true, EOF = true, ECLOSED = true }
local retry_statuses = { [502] = true, [503] = true, [504] = true }

-- perform_once, retried `retries` times (idempotent methods only) on a
-- failed connection or a 502/503/504, with loom.retry's back-off: 0.1 s
-- doubling, at most 5 s, jittered.
local function perform(opts)
  local retries = opts.retries or 0
  if retries == 0 or not idempotent[(opts.method or "GET"):upper()] then return perform_once(opts) end
  for k = 1, retries + 1 do
    local res, err, code = perform_once(opts)
    local again = (res and retry_statuses[res.status]) or (not res and retry_codes[code])
    if not again or k == retries + 1 then return res, err, code end
    if res and res.close then res:close() end
    local delay = math.min(0.1 * 2 ^ (k - 1), 5)
    core.sleep(delay / 2 + math.random() * delay / 2)
  end
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
-- over it: nil, "body too large", "EBODY"; applied to the decoded body),
-- `decompress` (true: `Accept-Encoding: gzip, deflate` is sent unless the
-- headers set one, and such a body is decoded; not with stream),
-- `retries` (0: an idempotent request is tried again this many times on a
-- refused or reset connection or a 502, 503 or 504, after 0.1 s doubling,
-- jittered; within the one timeout). Interim responses (1xx but 101) are
-- skipped.
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
  if opts.retries ~= nil and (math.type(opts.retries) ~= "integer" or opts.retries < 0) then
    argerror(1, "request", "retries must be a count")
  end
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

local function close_pools(within)
  for key, pool in pairs(within) do
    for _, conn in ipairs(pool.idle) do conn:stream():close() end
    pool.idle = {}
    within[key] = nil
  end
end

--- Closes the pooled idle client connections (before `loom.run` ends, so
-- that none is left open). Never blocks.
-- @usage loom.http.close_idle()
function http.close_idle()
  close_pools(pools)
end

local Session = { __name = "loom.http.Session" }
Session.__index = Session

--- A client session, from `loom.http.session`: its own connection pools,
-- default options, and a cookie jar.
-- @type Session

--- A request with the session's defaults (its `headers` merged under the
-- request's), pool and cookies. Blocks.
-- @tparam table opts as `loom.http.request`'s
-- @return a ClientResponse, or nil, msg, code
function Session:request(opts)
  check_type(opts, "table", 1, "request")
  local o = {}
  for k, v in pairs(self._defaults) do o[k] = v end
  for k, v in pairs(opts) do o[k] = v end
  if self._defaults.headers and opts.headers then
    local h = {}
    for k, v in pairs(self._defaults.headers) do h[k] = v end
    for k, v in pairs(opts.headers) do h[k] = v end
    o.headers = h
  end
  if self._closed then return nil, "session closed", "ECLOSED" end
  o._pools, o._jar = self._pools, self.cookies
  local res, err, code = http.request(o)
  return res, err, code
end

--- A GET request in the session. Blocks.
-- @tparam string url
-- @tparam[opt] table opts as `request`'s
-- @return a ClientResponse, or nil, msg, code
function Session:get(url, opts)
  check_type(url, "string", 1, "get")
  check_type(opts, "table", 2, "get", true)
  local o = { url = url, method = "GET" }
  for k, v in pairs(opts or {}) do if k ~= "url" then o[k] = v end end
  local res, err, code = self:request(o)
  return res, err, code
end

--- Closes the session's idle connections; later requests fail. Also
-- `<close>`. Never blocks.
function Session:close()
  self._closed = true
  close_pools(self._pools)
end
Session.__close = Session.close

--- A client session: requests made through it share its connection pools
-- (apart from the module's), its default options and, with `cookies`, a
-- cookie jar: cookies a response sets are sent back to the hosts and paths
-- they were set for (Secure ones over https only) until they expire; the
-- jar is `session.cookies` (`list()`, `clear()`). Never blocks.
-- @tparam[opt] table opts `cookies` (true: keep a jar), and any option of
-- `loom.http.request` (`headers`, `timeout`, `retries`, `tls` ...) as a
-- default for its requests
-- @return a Session (`request`, `get`, `close`)
-- @usage local s <close> = loom.http.session{ cookies = true, headers = { ["User-Agent"] = "bot" } }
-- s:request{ method = "POST", url = base .. "/login", body = form }
-- local me = s:get(base .. "/me") -- with the login's cookie
function http.session(opts)
  check_type(opts, "table", 1, "session", true)
  local defaults = {}
  for k, v in pairs(opts or {}) do if k ~= "cookies" then defaults[k] = v end end
  check_type(defaults.headers, "table", 1, "session", true)
  return setmetatable({ _defaults = defaults, _pools = {},
                        cookies = opts and opts.cookies and require("loom.http.cookies").new() or nil }, Session)
end


return http
