--- loom.tls: TLS streams on OpenSSL. A TLS stream is a loom.Stream whose
-- bytes pass through a TLS layer beneath its buffer (src/tls.c), so every
-- stream method (`read`, `read_line`, `write`, `lines`, `close` ...) and
-- everything built on streams (loom.http) work unchanged over TLS.
-- Secure by default: a client verifies the certificate chain (the system's
-- CA store unless `ca` says otherwise) and the host name, sends SNI and
-- refuses anything below TLS 1.2; only `verify = false` turns verification
-- off. Failures are `nil, msg, code` with code "ECERT" (verification: the
-- message says why), "EPROTO" (handshake or record), "ETIMEDOUT".
-- @module loom.tls
local core = require "loom.core"
local args = require "loom.args"

local check_type, argerror = args.type, args.error
local CTX = core._TLSContext
local tls = {}

local fields = { "cert", "key", "ca", "verify", "alpn", "min_version", "ciphers" }

--- A reusable context. Never blocks.
-- @tparam table opts `cert`, `key` (file paths or PEM text), `ca` (a file,
-- a directory or PEM text; default: the system store), `verify` (a client
-- verifies unless `false`; a server asks for and checks client
-- certificates when `true`), `alpn` (a list of protocol names),
-- `min_version` ("1.2", the default, or "1.3"), `ciphers` (for TLS 1.2),
-- `servers` (a server's certificates by host name, chosen by SNI:
-- `{["api.example"] = {cert =, key =}}`; other names get `cert`)
-- @return a context
-- @usage local ctx = loom.tls.context{ cert = "cert.pem", key = "key.pem" }
function tls.context(opts)
  check_type(opts, "table", 1, "context")
  return core._tls_context(opts)
end

-- Contexts made from inline fields, by their values: a client making many
-- connections with the same options loads the CA store once.
local cache = setmetatable({}, { __mode = "v" })

local function cache_key(opts)
  local parts = {}
  for i, k in ipairs(fields) do
    local v = opts[k]
    if type(v) == "table" then v = table.concat(v, "\0") end
    parts[i] = tostring(v)
  end
  return table.concat(parts, "\1")
end

-- The context opts stand for: opts itself (a context), opts.context, or one
-- made of its fields. Internal, shared with loom.net and loom.http.
function tls._context_of(opts, n, fname)
  if getmetatable(opts) == CTX then return opts end
  if type(opts) ~= "table" then argerror(n, fname, "a TLS context or a table of its fields expected") end
  if opts.context ~= nil then
    if getmetatable(opts.context) ~= CTX then argerror(n, fname, "context must be a loom.tls context") end
    return opts.context
  end
  if opts.servers ~= nil then return core._tls_context(opts) end -- a server's: made once, not cached
  local key = cache_key(opts)
  local ctx = cache[key]
  if not ctx then
    local t = {}
    for _, k in ipairs(fields) do t[k] = opts[k] end
    ctx = core._tls_context(t)
    cache[key] = ctx
  end
  return ctx
end

--- Upgrades a connected stream to TLS (STARTTLS) and runs the handshake.
-- Blocks.
-- @tparam Stream stream a connected stream
-- @tparam table opts the context (`context`) or its fields inline; `server
-- = true` for the server side; `servername` (the name sent as SNI and
-- checked against the certificate; default: the host the stream was
-- connected to)
-- @return the stream, now TLS (use it from then on), or nil, msg, code
-- (the stream is then closed)
-- @usage s:write("STARTTLS\r\n"); s:read_line(); s = assert(loom.tls.wrap(s, { servername = host }))
function tls.wrap(stream, opts)
  if getmetatable(stream) ~= core._Stream then
    argerror(1, "wrap", "loom.Stream expected, got " .. type(stream))
  end
  check_type(opts, "table", 2, "wrap")
  local ctx = tls._context_of(opts, 2, "wrap")
  local name = opts.servername
  if name == nil and not opts.server then name = require("loom.net")._host_of(stream) end
  local st, err, code = core._tls_wrap(stream, ctx, opts.server, name, opts._session)
  if not st then stream:abort() end
  return st, err, code
end

--- Connects to host:port over TCP, then runs the TLS handshake. Blocks.
-- @tparam string host
-- @tparam integer port
-- @tparam[opt] table opts the context (`context`) or its fields inline;
-- `servername` (default `host`; an IP literal is checked against the
-- certificate's IP entries), `timeout` (connect and handshake, seconds)
-- @return a TLS stream, or nil, msg, code ("ECERT", "EPROTO", "ETIMEDOUT" ...)
-- @usage local s <close> = assert(loom.tls.connect("example.com", 443))
function tls.connect(host, port, opts)
  check_type(host, "string", 1, "connect")
  args.port(port, 2, "connect")
  check_type(opts, "table", 3, "connect", true)
  opts = opts or {}
  local ctx = tls._context_of(opts, 3, "connect")
  local deadline = opts.timeout and core.now() + opts.timeout
  local st, err, code = require("loom.net").tcp.connect(host, port, { timeout = opts.timeout })
  if not st then return nil, err, code end
  local o = { context = ctx, servername = opts.servername or host, _session = opts._session }
  if not deadline then return tls.wrap(st, o) end
  local ok, s, e, c = core.timeout(math.max(0, deadline - core.now()), tls.wrap, st, o)
  if not ok then
    st:abort()
    return nil, ("%s:%d: TLS handshake timeout"):format(host, port), "ETIMEDOUT"
  end
  return s, e, c
end

--- The session of a TLS stream, to resume with a later connection to the
-- same server (internal: loom.http's pool).
tls._session = core._tls_session

return tls
