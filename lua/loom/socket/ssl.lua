--- loom.socket.ssl: LuaSec's shape (`ssl.wrap`, `conn:sni`,
-- `conn:dohandshake`) for `loom.socket` connections, on loom.tls: the
-- certificate chain and the host name are verified unless the parameters
-- say `verify = "none"`. `tcp(params)` gives a socket whose `connect` also
-- makes the handshake, for `socket.http` over https (`create =`).
-- @module loom.socket.ssl
local core = require "loom.core"
local lsocket = require "loom.socket"
local tls = require "loom.tls"

local ssl = {}

-- loom.tls options from LuaSec's parameters.
local function options(params, servername)
  local verify = params.verify
  if type(verify) == "table" then verify = verify[1] end
  return {
    server = params.mode == "server",
    verify = verify ~= "none" and (params.mode ~= "server" or verify == "peer"),
    ca = params.cafile or params.capath,
    cert = params.certificate,
    key = params.key,
    servername = servername,
    alpn = params.alpn and (type(params.alpn) == "table" and params.alpn or { params.alpn }) or nil,
  }
end

--- Prepares a connected loom.socket for TLS (the handshake is
-- `dohandshake`). Never blocks.
-- @param sock a connected `loom.socket` tcp (or an accepted one, with
-- `mode = "server"`)
-- @tparam[opt] table params LuaSec's: `mode` ("client" default or
-- "server"), `verify` ("peer" default for clients; "none" turns it off),
-- `cafile`/`capath`, `certificate`, `key`, `alpn`
-- @return the socket, ready for `sni` and `dohandshake`, or nil, err
function ssl.wrap(sock, params)
  if type(sock) ~= "table" or not sock._stream then return nil, "ssl.wrap: a connected loom.socket expected" end
  if sock:dirty() then return nil, "ssl.wrap: bytes were read before the TLS handshake" end
  sock._tls = params or {}
  return sock
end

--- Names the server (SNI, and the name the certificate is checked
-- against; default: the host connected to).
-- @function conn:sni
function ssl.sni(sock, name)
  sock._sni = name
  return true
end

--- Makes the TLS handshake. Blocks (up to the socket's timeout).
-- @function conn:dohandshake
-- @return true, or nil, err (the verification failure says why)
function ssl.dohandshake(sock)
  if not sock._tls then return nil, "not wrapped" end
  if sock._tls_done then return true end
  local opts = options(sock._tls, sock._sni)
  local st, msg, code
  if sock._timeout then
    local ok
    ok, st, msg, code = core.timeout(math.max(sock._timeout, 1e-6), tls.wrap, sock._stream, opts)
    if not ok then
      sock._stream:abort()
      return nil, "timeout"
    end
  else
    st, msg, code = tls.wrap(sock._stream, opts)
  end
  if not st then
    sock._state = "closed"
    return nil, code == "ETIMEDOUT" and "timeout" or msg
  end
  st:set_line_max(math.maxinteger) -- as the socket's was
  sock._stream, sock._tls_done, sock._st_timeout = st, true, nil -- its timeout set again
  sock:setstats(0, 0) -- the TLS layer counts its own bytes, as LuaSec's does
  sock:_refresh()
  return true
end

--- The TLS session: `{version, cipher, alpn, peer}` as `stream:tls_info()`.
-- @function conn:info
function ssl.info(sock)
  return sock._stream and sock._stream:tls_info()
end

--- A TLS client socket for `socket.http`'s `create`: its `connect` connects,
-- names the host and makes the handshake.
-- @tparam[opt] table params as `wrap`'s
-- @return a master tcp
function ssl.tcp(params)
  local sock = lsocket.tcp()
  local connect = sock.connect
  sock.connect = function(self, host, port)
    local ok, err = connect(self, host, port)
    if not ok then return nil, err end
    ssl.wrap(self, params)
    ssl.sni(self, host)
    return ssl.dohandshake(self)
  end
  return sock
end

return ssl
