--- loom.websocket: WebSockets (RFC 6455), server side inside a loom.http
-- handler and client side over ws:// and wss://. The handshakes are here;
-- framing, masking, reassembly, UTF-8 checks and the answers to pings and
-- closes are in C (src/ws.c), over the stream's buffer, so wss:// is the
-- same code over a TLS stream. Protocol errors close with the RFC's codes:
-- 1002 (protocol), 1007 (invalid UTF-8 in a text message), 1009 (a message
-- over `max_message`, refused before it is stored).
-- @module loom.websocket
local core = require "loom.core"
local net = require "loom.net"
local tls = require "loom.tls"
local args = require "loom.args"

local check_type, argerror = args.type, args.error
local websocket = {}

local DEFAULT_MAX = 16 * 1024 * 1024
local DEFAULT_PING = 20
local MAX_PENDING = 16 -- messages a ping reads ahead for receive
local CLOSE_TIMEOUT = 5
local PONG = 10

--- A websocket, from `upgrade` or `connect`: `protocol` is the agreed
-- subprotocol (or nil), `compressed` whether permessage-deflate is on.
-- @type WebSocket
local WebSocket = {}
WebSocket.__index = WebSocket

-- Pings the peer every `interval` seconds; one that does not answer within
-- `timeout` is gone: the websocket closes with 1011.
local function keepalive(ws, interval, timeout)
  while true do
    core.sleep(interval)
    if ws._closed then return end
    local ok, _, code = ws:ping(nil, timeout)
    if not ok then
      if code == "ETIMEDOUT" then ws:close(1011, "ping timeout") end
      return
    end
  end
end

-- z: the agreed permessage-deflate parameters (nil: none).
local function new(stream, client, opts, protocol, z)
  local w
  if z then
    w = core._ws_state(client, opts.max_message or DEFAULT_MAX, true, z.reset_out, z.reset_in, z.out_bits)
  else
    w = core._ws_state(client, opts.max_message or DEFAULT_MAX)
  end
  local ws = setmetatable({ _s = stream, _w = w, _pending = {}, protocol = protocol, compressed = z ~= nil },
    WebSocket)
  local interval = opts.ping_interval == nil and DEFAULT_PING or opts.ping_interval
  if interval then ws._keepalive = core.spawn(keepalive, ws, interval, opts.ping_timeout or DEFAULT_PING) end
  return ws
end

-- The offers of a Sec-WebSocket-Extensions header: a list of {name,
-- params = {k = v or true}}.
local function parse_extensions(value)
  local offers = {}
  for offer in (value or ""):gmatch("[^,]+") do
    local name
    local params = {}
    for part in offer:gmatch("[^;]+") do
      part = part:match("^%s*(.-)%s*$")
      if not name then
        name = part:lower()
      else
        local k, v = part:match("^([%w_]+)%s*=%s*\"?([^\"]*)\"?$")
        if k then params[k:lower()] = v else params[part:lower()] = true end
      end
    end
    if name then offers[#offers + 1] = { name = name, params = params } end
  end
  return offers
end

local function window_bits(v)
  if v == true or v == nil then return 15 end
  local n = tonumber(v)
  return n and math.type(n) == "integer" and n >= 8 and n <= 15 and n or nil
end

-- A server's answer to a client's permessage-deflate offers: the response
-- header and the parameters, or nil to go on without compression.
local function accept_deflate(header)
  for _, o in ipairs(parse_extensions(header)) do
    if o.name == "permessage-deflate" then
      local p, ok = o.params, true
      for k in pairs(p) do
        if k ~= "server_no_context_takeover" and k ~= "client_no_context_takeover" and
            k ~= "server_max_window_bits" and k ~= "client_max_window_bits" then ok = false end
      end
      local sbits = window_bits(p.server_max_window_bits)
      if ok and sbits and sbits >= 9 and (p.client_max_window_bits == nil or window_bits(p.client_max_window_bits)) then
        local resp = { "permessage-deflate" }
        if p.server_no_context_takeover then resp[#resp + 1] = "server_no_context_takeover" end
        if p.client_no_context_takeover then resp[#resp + 1] = "client_no_context_takeover" end
        if p.server_max_window_bits then resp[#resp + 1] = "server_max_window_bits=" .. sbits end
        return table.concat(resp, "; "), { reset_out = p.server_no_context_takeover and true or false,
          reset_in = p.client_no_context_takeover and true or false, out_bits = sbits }
      end
    end
  end
end

--- Sends one message. Blocks while the outgoing backlog is above the
-- stream's high-water mark (a slow reader never makes the sender's memory
-- grow).
-- @tparam string data
-- @tparam[opt="text"] string kind "text" or "binary"
-- @return true, or nil, msg, code ("closed" once closed)
-- @usage ws:send(cjson.encode(event))
function WebSocket:send(data, kind)
  check_type(data, "string", 1, "send")
  if kind ~= nil and kind ~= "text" and kind ~= "binary" then
    argerror(2, "send", "\"text\" or \"binary\" expected")
  end
  return core._ws_send(self._s, self._w, data, kind == "binary" and 2 or 1)
end

-- One message from the peer (fragments reassembled), with one reader at a
-- time; `pong` makes a pong end the wait too (for ping).
local function read(self, pong)
  if self._reading then error("receive: another task is reading this websocket", 3) end
  self._reading = pong and "ping" or true
  local _ <close> = setmetatable({}, { __close = function() self._reading = false end })
  return core._ws_recv(self._s, self._w, pong)
end

--- The next message. Blocks. Pings are answered and pongs noted on the
-- way; a cancelled receive loses nothing (the next one goes on).
-- @return data, "text" or "binary"; or nil, "closed", close code, reason
-- (1006 when the connection ended without a close)
-- @usage local msg, kind = ws:receive()
function WebSocket:receive()
  while self._reading == "ping" do core.sleep(0.001) end -- a ping reads for its pong: briefly
  if #self._pending > 0 then
    local m = table.remove(self._pending, 1)
    return m[1], m[2]
  end
  local data, kind, code, reason = read(self)
  if data == nil and kind == "pong" then return self:receive() end
  return data, kind, code, reason
end

--- Iterates over the messages until the websocket closes. Each step blocks.
-- @return an iterator of data, kind
-- @usage for msg in ws:messages() do ws:send(msg) end
function WebSocket:messages()
  return function()
    local data, kind = self:receive()
    if data then return data, kind end
  end
end

--- Sends a ping and waits for its pong. Blocks.
-- @tparam[opt] string data at most 125 bytes
-- @tparam[opt=20] number timeout seconds
-- @return true, or nil, msg, code ("timeout", "closed")
-- @usage assert(ws:ping())
function WebSocket:ping(data, timeout)
  check_type(data, "string", 1, "ping", true)
  if data and #data > 125 then argerror(1, "ping", "at most 125 bytes") end
  local _, _, before = core._ws_info(self._w)
  local ok, err, code = core._ws_send(self._s, self._w, data or "", 9)
  if not ok then return nil, err, code end
  local deadline = core.now() + (timeout or 20)
  while true do
    local _, closed, pongs = core._ws_info(self._w)
    if pongs > before then return true end
    if closed then return nil, "closed", "ECLOSED" end
    local left = deadline - core.now()
    if left <= 0 then return nil, "timeout", "ETIMEDOUT" end
    if self._reading or #self._pending >= MAX_PENDING then
      -- another task reads and notes the pong; or nobody takes the messages
      -- this ping would have to keep: backpressure wins, as for any reader
      core.sleep(math.min(0.005, left))
    else
      local done, d, k = core.timeout(left, read, self, true)
      if done and d then self._pending[#self._pending + 1] = { d, k } end
    end
  end
end

--- Runs the closing handshake: sends a close frame, waits (at most 5 s)
-- for the peer's, then closes the connection. Idempotent; also `<close>`.
-- A task blocked in receive wakes with nil, "closed", code, reason.
-- @tparam[opt=1000] integer code
-- @tparam[opt] string reason at most 123 bytes
-- @usage ws:close(1001, "going away")
function WebSocket:close(code, reason)
  if self._closed then return true end
  self._closed = true
  if self._keepalive and self._keepalive ~= core.current() then self._keepalive:cancel() end
  local sent = core._ws_close_frame(self._s, self._w, code or 1000, reason)
  if sent and not self._reading and core.current() then
    core.timeout(CLOSE_TIMEOUT, function()
      while read(self) do end -- what comes before the peer's close is dropped
    end)
  end
  self._s:close()
  return true
end
WebSocket.__close = WebSocket.close

-- The server side.

local function has_token(value, token)
  if not value then return false end
  for t in value:gmatch("[^,%s]+") do
    if t:lower() == token then return true end
  end
  return false
end

-- Answers a request that cannot be upgraded, and closes its connection.
local function refuse(req, st, status, reason, extra)
  req._taken = true
  st:_cancel_on_close(false)
  st:write(("HTTP/1.1 %d %s\r\n%sContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s")
    :format(status, reason, extra or "", #reason + 1, reason .. "\n"))
  return nil, reason
end

--- Completes the handshake of a request to a websocket, inside an
-- `http.serve` handler, which then owns the connection (when it returns,
-- the websocket is closed with 1000). A request that is not a valid upgrade
-- is answered here (400, 426 for another version, 403 for an origin not
-- allowed) and `nil, msg` returned. Blocks.
-- @tparam Request req
-- @tparam[opt] table opts `protocols` (the subprotocols this server speaks,
-- in preference order), `max_message` (16 MiB), `origins` (a list of
-- allowed Origin values; default: any), `compress` (accept a client's
-- permessage-deflate offer), `ping_interval` / `ping_timeout` (20 s / 20 s:
-- a ping every interval, and a peer that does not answer in time is closed
-- with 1011; `ping_interval = false` turns it off)
-- @return a WebSocket, or nil, msg
-- @usage loom.http.serve(host, port, function(req)
--   local ws = loom.websocket.upgrade(req); if not ws then return end
--   for msg in ws:messages() do ws:send(msg) end
-- end)
function websocket.upgrade(req, opts)
  check_type(req, "table", 1, "upgrade")
  check_type(opts, "table", 2, "upgrade", true)
  opts = opts or {}
  local conn = req[1]
  local st = conn:stream()
  local h = req.headers
  if req.method ~= "GET" or not has_token(h.upgrade, "websocket") or not has_token(h.connection, "upgrade") then
    return refuse(req, st, 400, "Bad Request: not a websocket upgrade")
  end
  if h["sec-websocket-version"] ~= "13" then
    return refuse(req, st, 426, "Upgrade Required", "Sec-WebSocket-Version: 13\r\n")
  end
  local key = h["sec-websocket-key"]
  if not key or not key:match("^[%w+/]+==$") or #key ~= 24 then
    return refuse(req, st, 400, "Bad Request: a bad Sec-WebSocket-Key")
  end
  if opts.origins then
    local ok = false
    for _, o in ipairs(opts.origins) do if o == h.origin then ok = true end end
    if not ok then return refuse(req, st, 403, "Forbidden: origin not allowed") end
  end
  local protocol
  if opts.protocols and h["sec-websocket-protocol"] then
    local offered = {}
    for p in h["sec-websocket-protocol"]:gmatch("[^,%s]+") do offered[p] = true end
    for _, p in ipairs(opts.protocols) do
      if offered[p] then protocol = p break end
    end
  end
  local ext, z
  if opts.compress then ext, z = accept_deflate(h["sec-websocket-extensions"]) end
  req._taken = true
  st:_cancel_on_close(false) -- the websocket sees its peer's close itself
  local ok, err, code = st:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    "Sec-WebSocket-Accept: ", core._ws_accept(key), "\r\n",
    protocol and ("Sec-WebSocket-Protocol: " .. protocol .. "\r\n") or "",
    ext and ("Sec-WebSocket-Extensions: " .. ext .. "\r\n") or "", "\r\n")
  if not ok then return nil, err, code end
  local ws = new(st, false, opts, protocol, z) -- bytes after the request head are its first frames
  req._ws = ws
  return ws
end

-- The client side.

--- Opens a websocket to a `ws://` or `wss://` URL (TLS verified by
-- default). Blocks.
-- @tparam string url
-- @tparam[opt] table opts `headers` (name -> value), `protocols` (a list
-- offered to the server), `timeout` (connect and handshake, default 30 s),
-- `max_message` (16 MiB), `tls` (a loom.tls context or its fields),
-- `compress` (offer permessage-deflate), `ping_interval` / `ping_timeout`
-- (as upgrade's)
-- @return a WebSocket, or nil, msg, code (TLS failures carry their codes:
-- "ECERT" ...; a refused upgrade "EPROTO" with the server's status)
-- @usage local ws <close> = assert(loom.websocket.connect("wss://example.com/feed"))
function websocket.connect(url, opts)
  check_type(url, "string", 1, "connect")
  check_type(opts, "table", 2, "connect", true)
  opts = opts or {}
  local scheme, host, port, target = core._http_parse_url(url)
  if not scheme then return nil, host, port end
  scheme = scheme:lower()
  if scheme ~= "ws" and scheme ~= "wss" then return nil, ("not a websocket URL: %s"):format(url), "EINVAL" end
  port = port or (scheme == "wss" and 443 or 80)
  local st
  local function handshake()
    local err, code
    if scheme == "wss" then
      local t = opts.tls or {}
      st, err, code = tls.connect(host, port, getmetatable(t) == core._TLSContext and { context = t } or t)
    else
      st, err, code = net.tcp.connect(host, port)
    end
    if not st then return nil, err, code end
    local key = core._ws_accept()
    local lines = { ("GET %s HTTP/1.1"):format(target), ("Host: %s"):format(host:find(":", 1, true) and
      "[" .. host .. "]:" .. port or host .. ":" .. port), "Upgrade: websocket", "Connection: Upgrade",
      "Sec-WebSocket-Key: " .. key, "Sec-WebSocket-Version: 13" }
    if opts.protocols then lines[#lines + 1] = "Sec-WebSocket-Protocol: " .. table.concat(opts.protocols, ", ") end
    if opts.compress then
      lines[#lines + 1] = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
    end
    for k, v in pairs(opts.headers or {}) do lines[#lines + 1] = ("%s: %s"):format(k, v) end
    lines[#lines + 1] = "\r\n"
    local ok
    ok, err, code = st:write(table.concat(lines, "\r\n"))
    local head = ok and st:read_until("\r\n\r\n")
    if not head then
      st:abort()
      return nil, err or "connection closed during the websocket handshake", code or "EPROTO"
    end
    local status = tonumber(head:match("^HTTP/1%.1 (%d%d%d)"))
    local hdr = {}
    for k, v in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do hdr[k:lower()] = v end
    if status ~= 101 then
      st:abort()
      return nil, ("websocket upgrade refused: %s"):format(head:match("^[^\r\n]*")), "EPROTO"
    end
    if not has_token(hdr.upgrade, "websocket") or not has_token(hdr.connection, "upgrade") or
        hdr["sec-websocket-accept"] ~= core._ws_accept(key) then
      st:abort()
      return nil, "websocket handshake: a bad answer from the server", "EPROTO"
    end
    local protocol = hdr["sec-websocket-protocol"]
    if protocol then
      local offered = false
      for _, p in ipairs(opts.protocols or {}) do if p == protocol then offered = true end end
      if not offered then
        st:abort()
        return nil, "websocket handshake: the server chose a subprotocol not offered", "EPROTO"
      end
    end
    local z
    if hdr["sec-websocket-extensions"] then
      local o = parse_extensions(hdr["sec-websocket-extensions"])[1]
      local cbits = o and window_bits(o.params.client_max_window_bits)
      if not opts.compress or not o or o.name ~= "permessage-deflate" or not cbits or cbits < 9 or
          (o.params.server_max_window_bits and not window_bits(o.params.server_max_window_bits)) then
        st:abort()
        return nil, "websocket handshake: the server agreed to an extension not offered", "EPROTO"
      end
      z = { reset_out = o.params.client_no_context_takeover and true or false,
        reset_in = o.params.server_no_context_takeover and true or false, out_bits = cbits }
    end
    return new(st, true, opts, protocol, z)
  end
  local done, ws, err, code = core.timeout(opts.timeout or 30, handshake)
  if not done then
    if st then st:abort() end
    return nil, "websocket handshake timeout", "ETIMEDOUT"
  end
  return ws, err, code
end

return websocket
