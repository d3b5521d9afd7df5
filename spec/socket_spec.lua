-- loom.socket: LuaSocket's API on loom, checked against LuaSocket itself
-- (the same script on both), against redis-lua on a real redis-server, and
-- with LuaSocket's own socket.http against nginx.
local loom = require "loom"
local helper = require "helper"
local run = helper.run
local lsocket = require "loom.socket"

-- The scripted peer of spec/peers/socket_parity.lua: the first line of a
-- connection names the case.
local function parity_peer()
  return assert(loom.tcp.serve("127.0.0.1", 0, function(s)
    local case = s:read_line()
    if case == "lines" then
      s:write("alpha\r\nbeta\ngam\rma\ntail")
    elseif case == "count" then
      s:write("0123456789")
    elseif case == "all" then
      s:write(("x"):rep(100000))
    elseif case == "stall" then
      s:write("partial")
      loom.sleep(0.6)
    elseif case == "echo" then
      while true do
        local data = s:read()
        if not data then break end
        s:write(data)
      end
    end
  end))
end

local function script(mode, port)
  local out, code = loom.process.run { "sh", "-c", ("LUA_PATH='%s' LUA_CPATH='%s' lua5.4 spec/peers/socket_parity.lua %s %d 2>&1")
    :format(package.path, package.cpath, mode, port) }
  return out, code
end

describe("loom.socket", function()
  it("gives what LuaSocket gives, call for call", function()
    run(function()
      local peer = parity_peer()
      local _, port = peer:address()
      local real, c1 = script("luasocket", port)
      local ours, c2 = script("loom", port)
      peer:close()
      assert.are.equal(0, c1, real)
      assert.are.equal(0, c2, ours)
      assert.matches('"lines" "alpha"', real, 1, true) -- the script ran
      assert.matches('"stall" nil "timeout" "partial"', real, 1, true)
      assert.are.equal(real, ours)
    end, 15)
  end)

  it("runs many clients concurrently in one loop, each blocking only its task", function()
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        for line in s:lines() do
          loom.sleep(0.05)
          s:write(line:upper(), "\n")
        end
      end))
      local _, port = srv:address()
      local t0 = loom.now()
      local results = {}
      loom.group(function(g)
        for i = 1, 50 do
          g:spawn(function()
            local c = assert(lsocket.connect("127.0.0.1", port))
            for k = 1, 3 do
              local msg = ("m%d-%d\n"):format(i, k)
              assert.are.equal(#msg, c:send(msg))
              local line = assert(c:receive())
              results[#results + 1] = line
            end
            c:close()
          end)
        end
      end)
      local took = loom.now() - t0
      srv:close()
      assert.are.equal(150, #results)
      assert.is_true(took < helper.upper(0.15, 0.5), took) -- 50 x 3 x 50 ms one after another would be 7.5 s
    end)
  end)

  it("select waits for readable sockets and a server's next connection, losing no byte", function()
    run(function()
      local srv = assert(lsocket.bind("127.0.0.1", 0))
      local _, port = srv:getsockname()
      local client = assert(lsocket.connect("127.0.0.1", port))
      local r, _, err = lsocket.select({ srv }, nil, 1)
      assert.is_nil(err)
      assert.is_true(r[srv])
      local conn = assert(srv:accept())
      r, _, err = lsocket.select({ conn }, nil, 0.05)
      assert.are.same({}, r)
      assert.are.equal("timeout", err)
      loom.spawn(function() loom.sleep(0.05); client:send("ping\n") end)
      local _, w = lsocket.select(nil, { client })
      assert.is_true(w[client]) -- a loom socket can always send
      local t0 = loom.now()
      r = lsocket.select({ conn, srv })
      assert.is_true(loom.now() - t0 >= 0.04)
      assert.is_true(r[conn])
      assert.is_true(conn:dirty())
      assert.are.equal("ping", conn:receive())
      for _, s in ipairs { client, conn, srv } do s:close() end
    end)
  end)

  it("keeps every byte and its order across timeouts, select and a close while a task waits", function()
    run(function()
      local srv = assert(lsocket.bind("127.0.0.1", 0))
      local _, port = srv:getsockname()
      local client = assert(lsocket.connect("127.0.0.1", port))
      local conn = assert(srv:accept())
      -- 3 MiB in one send: the sender waits for the peer (backpressure) while it reads
      local big = ("0123456789abcdef"):rep(3 * 65536)
      local reader = loom.spawn(function()
        local parts, got = {}, 0
        while got < #big do
          local n = math.min(100000, #big - got)
          local data = assert(conn:receive(n))
          parts[#parts + 1], got = data, got + #data
        end
        return table.concat(parts)
      end)
      assert.are.same({ #big + 0.0, nil, nil }, { client:send(big) })
      assert.are.equal(big, reader:await())
      local received, sent = client:getstats()
      assert.are.same({ 0.0, #big + 0.0 }, { received, sent })
      received, sent = conn:getstats()
      assert.are.same({ #big + 0.0, 0.0 }, { received, sent })
      -- a timed receive, then none again; select's read-ahead, then a plain receive
      client:send("one\r\ntwo\n")
      conn:settimeout(0.5)
      assert.are.equal("one", conn:receive())
      conn:settimeout(nil)
      assert.are.equal("two", conn:receive())
      client:send("three\nfour")
      assert.is_true(lsocket.select({ conn }, nil, 1)[conn])
      assert.are.equal("thr", conn:receive(3))
      assert.are.equal("ee", conn:receive())
      assert.are.equal("fo", conn:receive(2))
      assert.are.equal("ur", conn:receive(2))
      -- a receive cancelled while it waits leaves the bytes to the next one
      local cancelled = loom.spawn(function() return conn:receive() end)
      client:send("half")
      loom.sleep(0.03)
      cancelled:cancel()
      assert.is_false((pcall(cancelled.await, cancelled)))
      client:send(" line\n")
      assert.are.equal("half line", conn:receive())
      -- a receive waiting in one task when another closes the socket: "closed" and what came
      local waiting = loom.spawn(function() return { conn:receive() } end)
      client:send("five")
      loom.sleep(0.05)
      conn:close()
      assert.are.same({ nil, "closed", "five" }, waiting:await())
      assert.are.same({ nil, "closed", 0.0 }, { conn:send("x") })
      client:close()
      srv:close()
      -- a peer that resets: the next sends fail with LuaSocket's "closed"
      local rst = assert(loom.tcp.serve("127.0.0.1", 0, function(s) s:read(); s:abort() end))
      local c = assert(lsocket.connect("127.0.0.1", select(2, rst:address())))
      assert.are.equal(2, c:send("hi"))
      loom.sleep(0.1)
      c:send(("x"):rep(100000))
      assert.are.same({ nil, "closed", 0.0 }, { c:send(("x"):rep(100000)) })
      c:close()
      rst:close()
    end)
  end)

  it("speaks UDP: sendto/receivefrom, and connected send/receive", function()
    run(function()
      local a, b = lsocket.udp(), lsocket.udp()
      assert.are.equal(1, a:setsockname("127.0.0.1", 0))
      assert.are.equal(1, b:setsockname("127.0.0.1", 0))
      local _, pa = a:getsockname()
      local _, pb = b:getsockname()
      assert.are.equal(5, a:sendto("hello", "127.0.0.1", pb))
      assert.are.same({ "hello", "127.0.0.1", pa }, { b:receivefrom() })
      assert.are.equal(1, b:setpeername("127.0.0.1", pa))
      assert.are.equal(3, b:send("hey"))
      assert.are.equal("hey", a:receive())
      a:settimeout(0.05)
      assert.are.same({ nil, "timeout" }, { a:receive() })
      a:close()
      b:close()
    end)
  end)

  it("resolves names, and times as LuaSocket does", function()
    run(function()
      local ip, info = lsocket.dns.toip("localhost")
      assert.is_truthy(ip == "127.0.0.1" or ip == "::1")
      assert.are.equal("localhost", info.name)
      assert.are.same({ nil, "host not found" }, { lsocket.dns.toip("nonexistent.invalid") })
      assert.are.equal("string", type(lsocket.dns.gethostname()))
      local t0 = lsocket.gettime()
      lsocket.sleep(0.05)
      assert.is_true(lsocket.gettime() - t0 >= 0.05)
    end)
    -- outside a task: LuaSocket's own blocking socket
    local s = lsocket.tcp()
    assert.matches("^tcp{master}", tostring(s))
    assert.is_nil(getmetatable(s).__index._state)
    s:close()
  end)

  it("speaks TLS in LuaSec's shape, verifying by default, and carries socket.http over https", function()
    local C = helper.certs()
    local ssl = require "loom.socket.ssl"
    run(function()
      local srv = assert(loom.http.serve("127.0.0.1", 0, function(req)
        return 200, { ["Content-Type"] = "text/plain" }, "secret " .. req.path
      end, { tls = { cert = C .. "server.pem", key = C .. "server.key" } }))
      local _, port = srv:address()
      -- by hand, as ssl.https does: connect, wrap, sni, dohandshake
      local conn = assert(lsocket.connect("127.0.0.1", port))
      conn = assert(ssl.wrap(conn, { mode = "client", cafile = C .. "ca.pem" }))
      conn:sni("localhost")
      assert.is_true(conn:dohandshake())
      assert.matches("^TLSv1%.[23]$", conn:info().version)
      conn:send("GET /a HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
      local status = conn:receive()
      assert.are.equal("HTTP/1.1 200 OK", status)
      local rest = conn:receive("*a")
      assert.matches("secret /a$", rest)
      conn:close()
      -- verification is on unless turned off: the system store does not know the test CA
      conn = assert(ssl.wrap(assert(lsocket.connect("127.0.0.1", port)), {}))
      conn:sni("localhost")
      local ok, err = conn:dohandshake()
      assert.is_nil(ok)
      assert.matches("certificate verify failed", err)
      conn:close()
      conn = assert(ssl.wrap(assert(lsocket.connect("127.0.0.1", port)), { cafile = C .. "ca.pem" }))
      conn:sni("wrong.example")
      ok, err = conn:dohandshake()
      assert.is_nil(ok)
      assert.matches("hostname mismatch", err)
      conn:close()
      conn = assert(ssl.wrap(assert(lsocket.connect("127.0.0.1", port)), { verify = "none" }))
      assert.is_true(conn:dohandshake())
      conn:close()
      -- socket.http over https, its socket from loom.socket.ssl
      local http, ltn12 = require "socket.http", require "ltn12"
      local body = {}
      local one, code = http.request {
        url = ("https://localhost:%d/b"):format(port),
        sink = ltn12.sink.table(body),
        create = function() return ssl.tcp { cafile = C .. "ca.pem" } end,
      }
      assert.are.same({ 1, 200 }, { one, code })
      assert.are.equal("secret /b", table.concat(body))
      srv:close()
    end)
  end)

  describe("with LuaSocket libraries", function()
    -- Debian packages redis-lua for Lua 5.1-5.3; the file is the same for 5.4.
    local saved_path = package.path
    setup(function() package.path = package.path .. ";/usr/share/lua/5.3/?.lua" end)
    teardown(function() package.path = saved_path end)

    it("runs redis-lua unmodified from 100 tasks on a real redis-server, the loop never blocked", function()
      local port = helper.free_port()
      local pid = helper.spawn_bg(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no"):format(port))
      local ok, err = pcall(run, function()
        helper.wait_port(port)
        local redis = require "redis"
        local worst, ticking = 0, true
        local ticker = loom.spawn(function()
          local last = loom.now()
          while ticking do
            loom.sleep(0.005)
            worst = math.max(worst, loom.now() - last)
            last = loom.now()
          end
        end)
        loom.group(function(g)
          for i = 1, 100 do
            g:spawn(function()
              local client = redis.connect({ socket = assert(lsocket.connect("127.0.0.1", port)) })
              for _ = 1, 10 do client:incr("counter") end
              client:set("key:" .. i, "value " .. i)
              assert.are.equal("value " .. i, client:get("key:" .. i))
              -- (redis-lua's pipeline needs a reply parser on every command but the
              -- last on Lua 5.3 and later, with LuaSocket too: EXISTS and INCRBYFLOAT have one)
              local replies = client:pipeline(function(p)
                p:exists("key:" .. i)
                p:incrbyfloat("piped", 1)
                p:get("key:" .. i)
              end)
              assert.is_true(replies[1])
              assert.are.equal("value " .. i, replies[3])
              client:quit()
            end)
          end
        end)
        ticking = false
        ticker:await()
        local client = redis.connect({ socket = assert(lsocket.connect("127.0.0.1", port)) })
        assert.are.equal("1000", client:get("counter"))
        assert.are.equal("100", client:get("piped"))
        client:quit()
        assert.is_true(worst < (helper.sanitized and 0.2 or 0.05), worst)
        -- quit only shuts the socket down: it closes once nobody holds it
        client = nil
        collectgarbage()
        collectgarbage()
      end, 20)
      os.execute("kill " .. pid)
      assert(ok, err)
    end)

    it("runs LuaSocket's own socket.http with create = loom.socket.tcp: 50 downloads from nginx at once", function()
      local bytes = {}
      for i = 1, 200000 do bytes[i] = string.char((i * 7919) % 251) end
      local body = table.concat(bytes)
      local nginx = helper.nginx({ ["file.bin"] = body }, function(port, root)
        return ("server { listen 127.0.0.1:%d; root %s; }"):format(port, root)
      end)
      local port = nginx.port
      local ok, err = pcall(run, function()
        helper.wait_port(port)
        local http, ltn12 = require "socket.http", require "ltn12"
        local got = {}
        loom.group(function(g)
          for i = 1, 50 do
            g:spawn(function()
              local chunks = {}
              local one, code, headers = http.request {
                url = ("http://127.0.0.1:%d/file.bin"):format(port),
                sink = ltn12.sink.table(chunks),
                create = lsocket.tcp,
              }
              assert.are.equal(1, one)
              assert.are.equal(200, code)
              assert.are.equal(tostring(#body), headers["content-length"])
              got[i] = table.concat(chunks)
            end)
          end
        end)
        for i = 1, 50 do assert.are.equal(body, got[i]) end
        -- the simple form, and a failure as socket.http reports it
        local page, code = http.request { url = ("http://127.0.0.1:%d/missing"):format(port), create = lsocket.tcp,
          sink = ltn12.sink.null() }
        assert.are.same({ 1, 404 }, { page, code })
        assert.are.same({ nil, "connection refused" },
          { http.request { url = "http://127.0.0.1:1/", create = lsocket.tcp } })
      end, 20)
      nginx.stop()
      assert(ok, err)
    end)
  end)
end)
