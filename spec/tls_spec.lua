-- loom.tls against itself and against real peers (openssl s_server and
-- s_client, curl), with certificates made by tools/mkcerts.sh.
local loom = require "loom"
local helper = require "helper"
local run = helper.run
local tls = loom.tls

local C = helper.certs()
local server_ctx = { cert = C .. "server.pem", key = C .. "server.key" }
local trust = { ca = C .. "ca.pem" }

local free_port, wait_port = helper.free_port, helper.wait_port

-- A TLS echo server (loom) with ctx; returns it and its port.
local function echo_server(ctx, extra)
  local opts = { tls = ctx }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
    for line in s:lines() do s:write("echo ", line, "\n") end
  end, opts))
  return srv, select(2, srv:address())
end

describe("loom.tls", function()
  it("carries a stream both ways, with every read method, and reports the session", function()
    run(function()
      local srv, port = echo_server(server_ctx)
      local s = assert(tls.connect("localhost", port, trust))
      assert(s:write("one\n", "two\n"))
      assert.are.equal("echo one", s:read_line())
      assert.are.equal("echo two", s:read_line())
      local big = ("x"):rep(60000) -- many records, under the line limit
      assert(s:write(big, "\n"))
      local back = s:read_line()
      assert(back == "echo " .. big, "a long line changed on the way")
      local info = s:tls_info()
      assert.are.equal("TLSv1.3", info.version)
      assert.is_string(info.cipher)
      assert.is_false(info.reused)
      assert.are.equal("CN=localhost", info.peer.subject)
      assert.are.equal("CN=loom test CA", info.peer.issuer)
      assert.are.same({ "localhost", "127.0.0.1" }, info.peer.names)
      assert.is_true(info.peer.not_after > os.time())
      s:close()
      -- by IP: checked against the certificate's IP entries
      s = assert(tls.connect("127.0.0.1", port, trust))
      assert(s:write("ip\n"))
      assert.are.equal("echo ip", s:read_line())
      s:close()
      srv:close()
    end)
  end)

  it("refuses what it cannot verify, each with ECERT and the reason", function()
    run(function()
      local cases = {
        { "wrong", "hostname mismatch" },
        { "expired", "certificate has expired" },
        { "self", "self%-signed certificate" },
      }
      for _, c in ipairs(cases) do
        local srv, port = echo_server({ cert = C .. c[1] .. ".pem", key = C .. c[1] .. ".key" })
        local s, err, code = tls.connect("localhost", port, trust)
        assert.is_nil(s)
        assert.are.equal("ECERT", code, err)
        assert.matches(c[2], err)
        srv:close()
      end
      -- the system store does not know the test CA
      local srv, port = echo_server(server_ctx)
      local s, err, code = tls.connect("localhost", port)
      assert.is_nil(s)
      assert.are.equal("ECERT", code)
      assert.matches("unable to get local issuer certificate", err)
      -- only verify = false turns verification off; nothing else does
      s = assert(tls.connect("localhost", port, { verify = false }))
      s:close()
      assert.has_error(function() tls.connect("localhost", port, { verify = 0 }) end,
        "bad argument #1 to 'context' (verify must be a boolean)")
      assert.is_nil((tls.connect("localhost", port, {})))
      srv:close()
    end)
  end)

  it("refuses a plain-text server, a stalled handshake and TLS below 1.2", function()
    local port = free_port()
    local pid = helper.spawn_bg(("openssl s_server -accept 127.0.0.1:%d -cert %sserver.pem -key %sserver.key " ..
      "-tls1_1 -cipher DEFAULT@SECLEVEL=0 -quiet"):format(port, C, C))
    run(function()
      local plain = assert(loom.tcp.serve("127.0.0.1", 0, function(s) s:write("HELLO plain text\r\n") loom.sleep(0.2) end))
      local s, err, code = tls.connect("127.0.0.1", select(2, plain:address()), trust)
      assert.is_nil(s)
      assert.are.equal("EPROTO", code, err)
      local stall = assert(loom.tcp.serve("127.0.0.1", 0, function(s) s:read_all() end))
      s, err, code = tls.connect("127.0.0.1", select(2, stall:address()), { ca = C .. "ca.pem", timeout = 0.2 })
      assert.is_nil(s)
      assert.are.equal("ETIMEDOUT", code, err)
      plain:close(); stall:close()
      wait_port(port)
      s, err, code = tls.connect("localhost", port, trust)
      assert.is_nil(s)
      assert.are.equal("EPROTO", code, err)
      assert.matches("protocol", err)
    end)
    os.execute("kill " .. pid)
  end)

  it("a server runs its handler only after a completed handshake, and drops the others", function()
    run(function()
      local handled = 0
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        handled = handled + 1
        s:write("hi\n")
      end, { tls = server_ctx, handshake_timeout = 0.2 }))
      local port = select(2, srv:address())
      -- plain text: nothing but a closed connection
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      c:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      c:set_timeout(2)
      local got = c:read_all()
      assert.is_true(got == nil or not got:find("hi"))
      c:close()
      -- a client that never starts the handshake: dropped after handshake_timeout
      local t0 = loom.now()
      c = assert(loom.tcp.connect("127.0.0.1", port))
      c:set_timeout(2)
      local d, _, code = c:read()
      assert.is_nil(d)
      assert.is_true(code == "EOF" or code == "ECONNRESET", code)
      assert.is_true(loom.now() - t0 >= 0.2)
      c:close()
      assert.are.equal(0, handled)
      local s = assert(tls.connect("localhost", port, trust))
      assert.are.equal("hi", s:read_line())
      s:close()
      assert.are.equal(1, handled)
      srv:close()
    end)
  end)

  it("checks client certificates when the server asks (mutual TLS)", function()
    run(function()
      local srv, port = echo_server({ cert = C .. "server.pem", key = C .. "server.key", ca = C .. "ca.pem",
        verify = true })
      local s = assert(tls.connect("localhost", port, { ca = C .. "ca.pem", cert = C .. "client.pem",
        key = C .. "client.key" }))
      assert(s:write("mutual\n"))
      assert.are.equal("echo mutual", s:read_line())
      s:close()
      -- without a certificate the server refuses (TLS 1.3 says so after the handshake)
      local bare, err, code = tls.connect("localhost", port, trust)
      if bare then
        bare:write("x\n")
        local line
        line, err, code = bare:read_line()
        assert.is_nil(line)
        bare:close()
      end
      assert.is_string(code, err)
      srv:close()
    end)
  end)

  it("takes certificates and keys as PEM text, and negotiates ALPN", function()
    local function slurp(p) local f = assert(io.open(p)); local d = f:read("a"); f:close(); return d end
    run(function()
      local srv, port = echo_server({ cert = slurp(C .. "server.pem"), key = slurp(C .. "server.key"),
        alpn = { "h2", "http/1.1" } })
      local s = assert(tls.connect("localhost", port, { ca = slurp(C .. "ca.pem"), alpn = { "http/1.1" } }))
      assert.are.equal("http/1.1", s:tls_info().alpn)
      s:close()
      srv:close()
      assert.has_error(function() tls.context { cert = C .. "server.pem" } end,
        "bad argument #1 to 'context' (cert and key go together)")
      assert.has_error(function() tls.context { cert = C .. "server.pem", key = C .. "client.key" } end)
      assert.has_error(function() tls.context { min_version = "1.0" } end,
        "bad argument #1 to 'context' (min_version must be \"1.2\" or \"1.3\")")
    end)
  end)

  it("chooses a server certificate by the name the client asks for (SNI)", function()
    run(function()
      local srv, port = echo_server(tls.context { cert = C .. "server.pem", key = C .. "server.key",
        servers = { ["other.example"] = { cert = C .. "wrong.pem", key = C .. "wrong.key" } } })
      local s = assert(tls.connect("127.0.0.1", port, { ca = C .. "ca.pem", servername = "other.example" }))
      assert.are.equal("CN=other.example", s:tls_info().peer.subject)
      s:close()
      s = assert(tls.connect("127.0.0.1", port, { ca = C .. "ca.pem", servername = "localhost" }))
      assert.are.equal("CN=localhost", s:tls_info().peer.subject)
      s:close()
      srv:close()
    end)
  end)

  it("upgrades a plain stream in the middle of a conversation (STARTTLS)", function()
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        assert.are.equal("STARTTLS", s:read_line())
        s:write("GO\n")
        s = assert(tls.wrap(s, { server = true, cert = C .. "server.pem", key = C .. "server.key" }))
        s:write("secret: ", s:read_line(), "\n")
      end))
      local c = assert(loom.tcp.connect("localhost", select(2, srv:address())))
      c:write("STARTTLS\n")
      assert.are.equal("GO", c:read_line())
      c = assert(tls.wrap(c, trust)) -- checked against "localhost", the host it was connected to
      c:write("ping\n")
      assert.are.equal("secret: ping", c:read_line())
      c:close(); srv:close()
    end)
  end)

  it("tells a clean end (close_notify) from a cut one", function()
    local port = free_port()
    -- s_server closes cleanly when its stdin ends: keep it open
    local pid = helper.spawn_bg(("sleep 30 | openssl s_server -accept 127.0.0.1:%d -cert %sserver.pem " ..
      "-key %sserver.key -quiet"):format(port, C, C))
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s) s:write("whole\n") end, { tls = server_ctx }))
      local s = assert(tls.connect("localhost", select(2, srv:address()), trust))
      assert.are.equal("whole\n", s:read_all()) -- the server's close sent close_notify
      s:close(); srv:close()
      wait_port(port)
      s = assert(tls.connect("localhost", port, trust))
      s:write("hello\n")
      loom.sleep(0.1)
      os.execute("kill -9 " .. pid) -- the peer's socket closes with no close_notify
      local data, err, code = s:read_all()
      assert.is_nil(data)
      assert.are.equal("EPROTO", code)
      assert.matches("close_notify", err)
      s:close()
    end)
  end)

  it("fails an HTTPS body framed by the connection's end when that end is not proven", function()
    local port = free_port()
    local pid = helper.spawn_bg(("/usr/bin/python3 spec/peers/tls_cut.py %d %sserver.pem %sserver.key"):format(port, C, C))
    run(function()
      wait_port(port)
      local url = ("https://localhost:%d/"):format(port)
      local r, err, code = loom.http.get(url, { tls = trust }) -- closed without close_notify
      assert.is_nil(r)
      assert.are.equal("EPROTO", code)
      assert.matches("close_notify", err)
      r = assert(loom.http.get(url, { tls = trust })) -- the same after close_notify
      assert.are.equal("no length, ended by the close", r.body)
    end)
    os.execute("kill " .. pid .. " 2>/dev/null")
  end)

  it("sends close_notify before the end of a half-closed stream", function()
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        local got = s:read_all() -- the client's side ends cleanly: no EPROTO
        s:write(got and "got " .. got or "failed")
      end, { tls = server_ctx }))
      local s = assert(tls.connect("localhost", select(2, srv:address()), trust))
      s:write("half")
      assert(s:shutdown())
      assert.are.equal("got half", s:read_all())
      s:close(); srv:close()
    end)
  end)

  it("resumes a session", function()
    run(function()
      local srv, port = echo_server(server_ctx)
      local s = assert(tls.connect("localhost", port, trust))
      s:write("a\n")
      assert.are.equal("echo a", s:read_line()) -- the session ticket came with it
      local session = tls._session(s)
      s:close()
      assert.is_not_nil(session)
      s = assert(tls.connect("localhost", port, { ca = C .. "ca.pem", _session = session }))
      assert.is_true(s:tls_info().reused)
      s:close(); srv:close()
    end)
  end)
end)

describe("loom.tls with real peers", function()
  it("is served by openssl s_server (HTTPS client) and serves openssl s_client", function()
    local port = free_port()
    local pid = helper.spawn_bg(("openssl s_server -accept 127.0.0.1:%d -cert %sserver.pem -key %sserver.key -www")
      :format(port, C, C))
    run(function()
      wait_port(port)
      local r = assert(loom.http.get(("https://localhost:%d/"):format(port), { tls = trust }))
      assert.are.equal(200, r.status)
      assert.matches("s_server", r.body)
      local _, err, code = loom.http.get(("https://localhost:%d/"):format(port))
      assert.are.equal("ECERT", code, err)
      loom.http.close_idle()
      local srv, sport = echo_server(server_ctx)
      local out = loom.process.run { "sh", "-c", ("(printf 'over s_client\\n'; sleep 1) | env -u LD_PRELOAD timeout 5 openssl s_client -connect " ..
        "127.0.0.1:%d -servername localhost -CAfile %sca.pem -verify_return_error -quiet -no_ign_eof"):format(sport, C) }
      assert.matches("echo over s_client", out)
      srv:close()
    end, 10)
    os.execute("kill " .. pid)
  end)

  it("serves HTTPS to curl, verified against the test CA", function()
    run(function()
      local srv = assert(loom.http.serve("127.0.0.1", 0, function(req)
        return 200, { ["content-type"] = "text/plain" }, "hello over " .. req.path
      end, { tls = server_ctx }))
      local port = select(2, srv:address())
      local out, code = loom.process.run { "env", "-u", "LD_PRELOAD", "curl", "-sS", "--cacert", C .. "ca.pem",
        ("https://localhost:%d/tls"):format(port) }
      assert.are.equal(0, code, out)
      assert.are.equal("hello over /tls", out)
      -- and loom's own client, keeping the connection alive
      for i = 1, 3 do
        local r = assert(loom.http.get(("https://localhost:%d/%d"):format(port, i), { tls = trust }))
        assert.are.equal("hello over /" .. i, r.body)
      end
      -- a pooled connection verified under one trust is never reused under another
      local _, err, code = loom.http.get(("https://localhost:%d/x"):format(port))
      assert.are.equal("ECERT", code, err)
      loom.http.close_idle()
      srv:close()
    end, 10)
  end)

  it("fetches from nginx over TLS: verified, kept alive, large bodies whole; tls.connect too", function()
    local bytes = {}
    for i = 1, 300000 do bytes[i] = string.char((i * 131) % 256) end
    local big = table.concat(bytes)
    local nginx = helper.nginx({ ["big.bin"] = big }, function(port, root)
      return ("ssl_session_cache shared:SSL:1m; server { listen 127.0.0.1:%d ssl; ssl_certificate %sserver.pem; " ..
        "ssl_certificate_key %sserver.key; root %s; location = /hello { return 200 \"hello from nginx\"; } }")
        :format(port, C, C, root)
    end)
    local port = nginx.port
    local ok, err = pcall(run, function()
      wait_port(port)
      local base = ("https://localhost:%d"):format(port)
      for _ = 1, 3 do
        local r = assert(loom.http.get(base .. "/hello", { tls = trust }))
        assert.are.same({ 200, "hello from nginx" }, { r.status, r.body })
      end
      local r = assert(loom.http.get(base .. "/big.bin", { tls = trust }))
      assert.are.equal(#big, #r.body)
      assert.are.equal(big, r.body)
      loom.http.close_idle()
      local s = assert(tls.connect("localhost", port, trust))
      s:write("GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
      assert.matches("hello from nginx$", assert(s:read_all()))
      s:close()
      -- the system store does not know the test CA
      local _, e, code = loom.http.get(base .. "/hello")
      assert.are.equal("ECERT", code, e)
      loom.http.close_idle()
    end, 15)
    nginx.stop()
    assert(ok, err)
  end)
end)
