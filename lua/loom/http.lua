--- loom.http: an HTTP/1.1 server and client.
-- Messages are parsed and formatted in C (src/http.c, on http_parser); this
-- module runs the server's connections (keep-alive, pipelining, limits,
-- handler errors, graceful close) and the client's pool of kept-alive
-- connections per host (limit, reuse, retry on a stale connection,
-- redirects, total timeout). Failures return `nil, msg, code`.
-- The server is lua/loom/http/server.lua, the client
-- lua/loom/http/client.lua, what they share lua/loom/http/common.lua.
-- @module loom.http
local common = require "loom.http.common"
local server = require "loom.http.server"
local client = require "loom.http.client"
local router = require "loom.http.router"
local static = require "loom.http.static"

return {
  serve = server.serve,
  request = client.request,
  get = client.get,
  close_idle = client.close_idle,
  session = client.session,
  encode_query = common.encode_query,
  decode_query = common.decode_query,
  router = router.new,
  static = static.new,
  error = router.error,
  access_log = router.access_log,
}
