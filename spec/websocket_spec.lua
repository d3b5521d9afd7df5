-- loom.websocket against itself, against python3-websockets (a strict
-- implementation) both ways, and against scripted bad peers.
local loom = require "loom"
local helper = require "helper"
local run = helper.run
local websocket = loom.websocket

-- An echo server (loom.http.serve + upgrade); returns it and its ws:// base.
local function echo_server(opts, extra)
  local srv = assert(loom.http.serve("127.0.0.1", 0, function(req)
    local ws = websocket.upgrade(req, opts)
    if not ws then return end
    for msg, kind in ws:messages() do ws:send(msg, kind) end
  end, extra))
  return srv, ("ws://127.0.0.1:%d/"):format(select(2, srv:address()))
end

-- A raw client frame: masked, with the given first byte (FIN, RSV, opcode).
local function frame(b0, payload, unmasked)
  local n = #payload
  local len = n < 126 and string.char((unmasked and 0 or 0x80) | n)
    or n < 65536 and string.pack(">BI2", (unmasked and 0 or 0x80) | 126, n)
    or string.pack(">BI8", (unmasked and 0 or 0x80) | 127, n)
  if unmasked then return string.char(b0) .. len .. payload end
  local key = "\1\2\3\4"
  local out = {}
  for i = 1, n do out[i] = string.char(payload:byte(i) ~ key:byte((i - 1) % 4 + 1)) end
  return string.char(b0) .. len .. key .. table.concat(out)
end

-- A raw, handshaken connection to a websocket server at port.
local function raw_ws(port)
  local s = assert(loom.tcp.connect("127.0.0.1", port))
  s:write("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
  local head = assert(s:read_until("\r\n\r\n"))
  assert(head:find("HTTP/1.1 101", 1, true), head)
  assert(head:find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", 1, true), head) -- RFC 6455's example
  return s
end

-- The close frame a raw connection gets: its code (and reason).
local function close_code(s)
  s:set_timeout(2)
  while true do
    local h = s:read_exactly(2)
    if not h then return nil end
    local b0, b1 = h:byte(1, 2)
    local len = b1 & 0x7f
    if len == 126 then len = string.unpack(">I2", s:read_exactly(2))
    elseif len == 127 then len = string.unpack(">I8", s:read_exactly(8)) end
    local body = len > 0 and s:read_exactly(len) or ""
    if b0 & 0x0f == 8 then
      if #body < 2 then return 1005 end
      return string.unpack(">I2", body), body:sub(3)
    end
  end
end

describe("loom.websocket", function()
  it("echoes text and binary of every boundary size, and negotiates a subprotocol", function()
    run(function()
      local srv, base = echo_server({ protocols = { "v2", "v1" } })
      local ws = assert(websocket.connect(base, { protocols = { "v1", "v2" } }))
      assert.are.equal("v2", ws.protocol)
      for _, n in ipairs({ 0, 1, 125, 126, 127, 65535, 65536, 1024 * 1024 }) do
        local msg = ("é"):rep(n // 2) .. ("a"):rep(n % 2)
        assert(ws:send(msg))
        local back, kind = ws:receive()
        assert(back == msg, "size " .. n)
        assert.are.equal("text", kind)
      end
      local bin = ""
      for i = 0, 255 do bin = bin .. string.char(i) end
      assert(ws:send(bin, "binary"))
      assert.are.same({ bin, "binary" }, { ws:receive() })
      assert.is_true(ws:ping("hello"))
      ws:close(4000, "bye")
      assert.are.same({ nil, "closed", 4000, "bye" }, { ws:receive() })
      assert.are.same({ nil, "closed", "ECLOSED" }, { ws:send("late") })
      srv:close()
    end)
  end)

  it("answers requests that are not upgrades with 400 and other versions with 426", function()
    run(function()
      local srv, base = echo_server()
      local port = select(2, srv:address())
      local r = assert(loom.http.get(("http://127.0.0.1:%d/"):format(port)))
      assert.are.equal(400, r.status)
      local s = assert(loom.tcp.connect("127.0.0.1", port))
      s:write("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
      local head = s:read_until("\r\n\r\n")
      assert.matches("^HTTP/1.1 426", head)
      assert.matches("Sec%-WebSocket%-Version: 13", head)
      s:close()
      local _, err, code = websocket.connect((base:gsub("^ws:", "http:")))
      assert.are.equal("EINVAL", code, err)
      loom.http.close_idle()
      srv:close()
    end)
  end)

  it("refuses bad frames with the RFC's close codes", function()
    run(function()
      local srv = echo_server({ max_message = 1000 })
      local port = select(2, srv:address())
      local cases = {
        { frame(0x81, "unmasked", true), 1002 },
        { frame(0xC1, "rsv1 set"), 1002 },
        { frame(0x83, "opcode 3"), 1002 },
        { frame(0x8B, "opcode 11"), 1002 },
        { frame(0x89, ("p"):rep(126)), 1002 },        -- a control frame over 125 bytes
        { frame(0x09, "fragmented ping"), 1002 },      -- a control frame without FIN
        { frame(0x80, "continuation of nothing"), 1002 },
        { frame(0x01, "open") .. frame(0x81, "new message inside"), 1002 },
        { frame(0x81, "bad \xff utf-8"), 1007 },
        { frame(0x01, "split \xe2\x82") .. frame(0x80, "\x28 bad"), 1007 }, -- invalid across fragments
        { frame(0x81, "surrogate \xed\xa0\x80"), 1007 },
        { frame(0x88, "\x03\xe7"), 1002 },             -- close code 999
        { frame(0x88, "\x03"), 1002 },                 -- a one-byte close body
        { frame(0x82, ("b"):rep(1001)), 1009 },        -- over max_message
        { frame(0x02, ("b"):rep(600)) .. frame(0x80, ("b"):rep(600)), 1009 }, -- over it in fragments
      }
      for i, c in ipairs(cases) do
        local s = raw_ws(port)
        s:write(c[1])
        assert.are.equal(c[2], close_code(s), "case " .. i)
        s:close()
      end
      srv:close()
    end)
  end)

  it("reassembles fragments with control frames between them, and answers pings", function()
    run(function()
      local srv = echo_server()
      local s = raw_ws(select(2, srv:address()))
      s:write(frame(0x01, "frag"), frame(0x89, "in between"), frame(0x00, "mented "), frame(0x80, "✓"))
      -- the pong comes first (unmasked from the server), then the echo
      assert.are.equal(string.char(0x8A, 10) .. "in between", s:read_exactly(12))
      local h = s:read_exactly(2)
      assert.are.equal(0x81, h:byte(1))
      assert.are.equal("fragmented ✓", s:read_exactly(h:byte(2)))
      s:write(frame(0x88, string.pack(">I2", 1000) .. "done"))
      assert.are.same({ 1000, "" }, { close_code(s) })
      s:close(); srv:close()
    end)
  end)

  it("reports a peer that vanishes mid-frame as 1006, and a close from another task wakes the reader", function()
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        local head = s:read_until("\r\n\r\n")
        local key = head:match("Sec%-WebSocket%-Key: ([^\r\n]+)")
        s:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
          "Sec-WebSocket-Accept: ", require("loom.core")._ws_accept(key), "\r\n\r\n")
        s:write(string.char(0x82, 100), "only part of it")
        loom.sleep(0.05)
        s:abort()
      end))
      local ws = assert(websocket.connect(("ws://127.0.0.1:%d/"):format(select(2, srv:address()))))
      local _, what, code = ws:receive()
      assert.are.same({ "closed", 1006 }, { what, code })
      ws:close()
      srv:close()
      local srv2, base = echo_server()
      ws = assert(websocket.connect(base))
      local reader = loom.spawn(function() return ws:receive() end)
      loom.sleep(0.05)
      ws:close(1001, "going away")
      assert.are.same({ nil, "closed", 1001, "going away" }, { reader:await() })
      srv2:close()
    end)
  end)

  it("a receive cancelled mid-message loses nothing", function()
    run(function()
      local srv = echo_server()
      local s = raw_ws(select(2, srv:address()))
      local ws = assert(websocket.connect(("ws://127.0.0.1:%d/"):format(select(2, srv:address()))))
      s:close()
      local big = ("z"):rep(300000)
      local sender = loom.spawn(function() return ws:send(big) end)
      local t = loom.spawn(function() return ws:receive() end)
      loom.sleep(0.001)
      t:cancel()
      pcall(t.await, t)
      sender:await()
      local back = ws:receive()
      assert(back == big, "the message was damaged by the cancellation")
      ws:close()
      srv:close()
    end)
  end)
end)

describe("loom.websocket with python3-websockets", function()
  it("serves its client: every size, binary, fragments, ping, close codes", function()
    run(function()
      local srv, base = echo_server()
      local out, code = loom.process.run { "env", "-u", "LD_PRELOAD", "/usr/bin/python3", "spec/peers/ws_peer.py",
        "client", base, timeout = 15 }
      assert.are.equal(0, code, out)
      for _, n in ipairs({ 0, 1, 125, 126, 127, 65535, 65536, 100000 }) do
        assert.matches(("echo %d ok"):format(n), out, 1, true)
      end
      assert.matches("binary ok", out, 1, true)
      assert.matches("fragmented fragmented message ✓", out, 1, true)
      assert.matches("pong ok", out, 1, true)
      assert.matches("closed 4000", out, 1, true) -- our reply echoes the code
      srv:close()
    end, 20)
  end)

  it("is served to loom's client: echo, a fragmented message, the server's close code", function()
    local p = assert(io.popen("env -u LD_PRELOAD /usr/bin/python3 spec/peers/ws_peer.py server"))
    local port = tonumber(p:read("l"))
    run(function()
      local ws = assert(websocket.connect(("ws://127.0.0.1:%d/"):format(port)))
      assert(ws:send("hello"))
      assert.are.same({ "hello", "text" }, { ws:receive() })
      assert(ws:send(("b"):rep(70000), "binary"))
      local back, kind = ws:receive()
      assert.are.equal(70000, #back)
      assert.are.equal("binary", kind)
      assert(ws:send("fragments"))
      assert.are.same({ "one two three", "text" }, { ws:receive() })
      assert.is_true(ws:ping())
      assert(ws:send("close"))
      assert.are.same({ nil, "closed", 4001, "asked" }, { ws:receive() })
      ws:close()
      local ws2 = assert(websocket.connect(("ws://127.0.0.1:%d/"):format(port)))
      ws2:close(4002, "from loom")
    end)
    local out = p:read("a")
    p:close()
    assert.matches("server saw close 4002 from loom", out, 1, true)
  end)

  it("runs over TLS (wss://), verified by default", function()
    local C = helper.certs()
    run(function()
      local srv = assert(loom.http.serve("127.0.0.1", 0, function(req)
        local ws = websocket.upgrade(req)
        if ws then for msg in ws:messages() do ws:send("secure " .. msg) end end
      end, { tls = { cert = C .. "server.pem", key = C .. "server.key" } }))
      local url = ("wss://localhost:%d/"):format(select(2, srv:address()))
      local _, err, code = websocket.connect(url)
      assert.are.equal("ECERT", code, err)
      local ws = assert(websocket.connect(url, { tls = { ca = C .. "ca.pem" } }))
      assert(ws:send("hi"))
      assert.are.equal("secure hi", ws:receive())
      ws:close()
      srv:close()
    end)
  end)
end)
