local loom = require "loom"
local helper = require "helper"
local run = helper.run
local http = loom.http

-- An HTTP server on a free port of 127.0.0.1; returns it, its port and base URL.
local function serve(handler, opts)
  local srv = assert(http.serve("127.0.0.1", 0, handler, opts))
  local _, port = srv:address()
  return srv, port, "http://127.0.0.1:" .. port
end

-- Sends raw bytes (a string, or a list of pieces written with a pause
-- between them) on a new connection and returns everything the server
-- sends until it closes (or `limit` seconds pass).
local function raw(port, data, limit)
  local c = assert(loom.tcp.connect("127.0.0.1", port))
  if type(data) == "string" then data = { data } end
  for i, piece in ipairs(data) do
    if i > 1 then loom.sleep(0.002) end
    c:write(piece)
  end
  local out = {}
  loom.timeout(limit or 2, function()
    while true do
      local s = c:read()
      if not s then break end
      out[#out + 1] = s
    end
  end)
  c:close()
  return table.concat(out)
end

-- The status codes of the responses in a raw exchange, in order.
local function statuses(text)
  local list = {}
  for code in text:gmatch("HTTP/1%.1 (%d%d%d)") do list[#list + 1] = tonumber(code) end
  return list
end

local function done(srv)
  http.close_idle()
  srv:close()
end

describe("loom.http server", function()
  it("routes on method, decoded path, query and case-insensitive headers", function()
    run(function()
      local seen
      local srv, _, base = serve(function(req)
        seen = req
        return 201, { ["X-Path"] = req.path }, req.method .. " " .. req.query.q .. " " .. req.headers["X-Token"]
      end)
      local res = assert(http.request { method = "PUT", url = base .. "/a%20b/c?q=x+y%26z&n=1",
                                        headers = { ["x-token"] = "t1" }, body = "" })
      assert.are.equal(201, res.status)
      assert.are.equal("PUT x y&z t1", res.body)
      assert.are.equal("/a b/c", res.headers["x-path"])
      assert.are.equal("/a b/c", res.headers["X-PATH"])
      assert.are.equal("/a%20b/c?q=x+y%26z&n=1", seen.target)
      assert.are.equal("q=x+y%26z&n=1", seen.query_string)
      assert.are.equal("1", seen.query.n)
      assert.are.equal("1.1", seen.version)
      done(srv)
    end)
  end)

  it("answers from return values, from res, and with chunks when the length is unknown", function()
    run(function()
      local srv, _, base = serve(function(req, res)
        if req.path == "/string" then return "just a body" end
        if req.path == "/nothing" then return end
        if req.path == "/res" then
          res:status(202):header("X-A", "1")
          res:finish("via res")
          return
        end
        if req.path == "/chunks" then
          res:header("Content-Type", "text/plain")
          for i = 1, 3 do assert(res:write("part" .. i .. ";")) end
          return
        end
        if req.path == "/length" then
          res:header("Content-Length", "6")
          res:write("abc")
          res:write("def")
          return
        end
        return 404, {}, "no"
      end)
      local r = assert(http.get(base .. "/string"))
      assert.are.same({ 200, "just a body", "11" }, { r.status, r.body, r.headers["content-length"] })
      r = assert(http.get(base .. "/nothing"))
      assert.are.same({ 200, "" }, { r.status, r.body })
      r = assert(http.get(base .. "/res"))
      assert.are.same({ 202, "via res", "1" }, { r.status, r.body, r.headers["x-a"] })
      r = assert(http.get(base .. "/chunks"))
      assert.are.same({ 200, "part1;part2;part3;", "chunked" }, { r.status, r.body, r.headers["transfer-encoding"] })
      r = assert(http.get(base .. "/length"))
      assert.are.same({ "abcdef", "6" }, { r.body, r.headers["content-length"] })
      r = assert(http.get(base .. "/missing"))
      assert.are.same({ 404, "no" }, { r.status, r.body })
      assert.is_string(r.headers.date)
      done(srv)
    end)
  end)

  it("reads request bodies whole, streamed, and chunked", function()
    run(function()
      local srv, port, base = serve(function(req)
        if req.path == "/stream" then
          local parts = {}
          for chunk in req.read, req do parts[#parts + 1] = chunk end
          return 200, {}, #parts > 0 and table.concat(parts) or "none"
        end
        return 200, {}, "[" .. assert(req:body()) .. "]"
      end)
      local big = string.rep("0123456789", 50000)
      local r = assert(http.request { method = "POST", url = base .. "/", body = big })
      assert.are.equal("[" .. big .. "]", r.body)
      r = assert(http.request { method = "POST", url = base .. "/stream", body = big })
      assert.are.equal(big, r.body)
      local out = raw(port, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" ..
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
      assert.matches("\r\n\r\n%[hello world%]$", out)
      done(srv)
    end)
  end)

  it("keeps connections alive, answers pipelined requests in order, and closes when asked", function()
    run(function()
      local srv, port = serve(function(req)
        if req.path == "/slow" then loom.sleep(0.02) end
        return 200, {}, req.path .. ";"
      end)
      local out = raw(port, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n" ..
        "GET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n")
      local bodies = {}
      for b in out:gmatch("\r\n\r\n(/%w+);") do bodies[#bodies + 1] = b end
      assert.are.same({ "/slow", "/2", "/3" }, bodies)
      assert.matches("Connection: close", out)
      -- HTTP/1.0 closes unless asked to keep the connection
      out = raw(port, "GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
      assert.are.same({ 200 }, statuses(out))
      out = raw(port, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
      assert.are.same({ 200, 200 }, statuses(out))
      assert.matches("Connection: keep%-alive", out)
      done(srv)
    end)
  end)

  it("parses pipelined requests split at every byte boundary", function()
    run(function()
      local srv, port = serve(function(req) return 200, {}, req.path .. ":" .. req:body() end)
      local text = "POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" ..
                   "GET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
      for cut = 1, #text - 1 do
        local out = raw(port, { text:sub(1, cut), text:sub(cut + 1) })
        assert.are.same({ 200, 200 }, statuses(out), "cut at " .. cut)
        assert.matches("/one:abc.*/two:$", out)
      end
      -- and one byte per write
      local bytes = {}
      for i = 1, #text do bytes[i] = text:sub(i, i) end
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      for _, b in ipairs(bytes) do c:write(b) end
      local out = c:read_all()
      c:close()
      assert.are.same({ 200, 200 }, statuses(out))
      done(srv)
    end, 10)
  end)

  it("closes the connection after a response when the handler says Connection: close", function()
    run(function()
      local srv, port = serve(function(req, res)
        if req.path == "/res" then res:header("Connection", "close"); return "bye" end
        return 200, { Connection = "close" }, "bye"
      end)
      for _, path in ipairs { "/plain", "/res" } do
        local out = raw(port, "GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\n\r\n")
        assert.are.same({ 200 }, statuses(out))
        assert.matches("Connection: close\r\n", out)
        assert.matches("\r\n\r\nbye$", out)
      end
      done(srv)
    end)
  end)

  it("answers HEAD with the head alone and honours Expect: 100-continue", function()
    run(function()
      local srv, port = serve(function(req)
        if req.path == "/refuse" then return 403, {}, "no" end
        return 200, {}, "body of " .. req.method .. (req.method == "POST" and req:body() or "")
      end)
      local out = raw(port, "HEAD /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert.matches("Content%-Length: 12\r\n", out)
      assert.matches("\r\n\r\n$", out)
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      c:write("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
      assert.are.equal("HTTP/1.1 100 Continue", c:read_line())
      assert.are.equal("", c:read_line())
      c:write("data")
      assert.are.equal("HTTP/1.1 200 OK", c:read_line())
      c:close()
      -- refused before the body: no 100, and the connection is closed after
      out = raw(port, "POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
      assert.are.same({ 403 }, statuses(out))
      assert.not_matches("100 Continue", out)
      assert.matches("Connection: close", out)
      done(srv)
    end)
  end)

  it("enforces header and body limits and a header timeout with the right statuses", function()
    run(function()
      local srv, port = serve(function(req) return 200, {}, assert(req:body()) end,
        { max_header_size = 1024, max_body_size = 100, header_timeout = 0.2 })
      assert.are.same({ 431 }, statuses(raw(port, "GET / HTTP/1.1\r\nX: " .. ("a"):rep(2000) .. "\r\n\r\n")))
      assert.are.same({ 413 }, statuses(raw(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")))
      -- a chunked body over the limit is found while reading it
      assert.are.same({ 413 }, statuses(raw(port, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
        "40\r\n" .. ("x"):rep(64) .. "\r\n40\r\n" .. ("x"):rep(64) .. "\r\n0\r\n\r\n")))
      local t = helper.elapsed(function()
        assert.are.same({ 408 }, statuses(raw(port, "GET / HTTP/1.1\r\nHost: slow")))
      end)
      assert(t > 0.15 and t < helper.upper(0.15, 1), t)
      done(srv)
    end)
  end)

  it("follows RFC 9112 on heads: Host, the version, field names, a huge chunk size, long heads", function()
    run(function()
      local srv, port = serve(function(req) return 200, {}, assert(req:body()) end, { max_body_size = 1000 })
      local function status_of(req) return statuses(raw(port, req))[1] end
      assert.are.equal(400, status_of("GET / HTTP/1.1\r\n\r\n")) -- no Host
      assert.are.equal(400, status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"))
      assert.are.equal(200, status_of("GET / HTTP/1.0\r\n\r\n")) -- 1.0 needs none
      assert.are.equal(505, status_of("GET / HTTP/9.9\r\nHost: x\r\n\r\n"))
      assert.are.equal(400, status_of("GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n"))
      assert.are.equal(400, status_of("GET / HTTP/1.1\r\nHost: x\r\nName : v\r\n\r\n"))
      assert.are.equal(431, status_of("GET / HTTP/1.1\r\nHost: x\r\nX:" .. (" "):rep(100000) .. "v\r\n\r\n"))
      -- a chunk too large for the limit is refused at its size line, without waiting for it
      local t = helper.elapsed(function()
        local c = assert(loom.tcp.connect("127.0.0.1", port))
        c:write("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\n")
        assert.are.equal("HTTP/1.1 413 Content Too Large", (c:read_line()))
        c:close()
      end)
      assert.is_true(t < helper.upper(0, 1), t)
      done(srv)
    end)
  end)

  it("answers a request body that stalls past body_timeout with 408, logged as no failure", function()
    local out = helper.lua([[
      local loom = require "loom"
      loom.run(function()
        local srv = assert(loom.http.serve("127.0.0.1", 0, function(req) return 200, {}, assert(req:body()) end,
          { body_timeout = 0.1 }))
        local _, port = srv:address()
        local c = assert(loom.tcp.connect("127.0.0.1", port))
        c:write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        print("status line", c:read_line())
        c:close(); srv:close()
      end)
    ]])
    assert.matches("status line\tHTTP/1.1 408 Request Timeout", out, 1, true)
    assert.not_matches("failed", out)
  end)

  it("answers a handler's odd return values well: finish() returned, status out of range", function()
    local out = helper.lua([[
      local loom = require "loom"
      loom.run(function()
        local srv = assert(loom.http.serve("127.0.0.1", 0, function(req, res)
          if req.path == "/finish" then return res:finish("finished") end
          if req.path == "/99" then return 99, {}, "x" end
          return 1000, {}, "x"
        end))
        local _, port = srv:address()
        for _, p in ipairs({ "/finish", "/99", "/1000" }) do
          local r = assert(loom.http.get(("http://127.0.0.1:%d%s"):format(port, p)))
          print(p, r.status, r.body)
        end
        loom.http.close_idle(); srv:close()
      end)
    ]])
    assert.matches("/finish\t200\tfinished", out, 1, true)
    assert.not_matches("returned a boolean", out)
    assert.matches("/99\t500", out, 1, true)
    assert.matches("/1000\t500", out, 1, true)
    assert.matches("handler returned status 99 %(100%-999 expected%)", out)
  end)

  it("answers malformed, truncated and bad-chunk requests with 400 or a close", function()
    run(function()
      local srv, port = serve(function(req) return 200, {}, assert(req:body()) end)
      assert.are.same({ 400 }, statuses(raw(port, "GARBAGE\r\n\r\n")))
      assert.are.same({ 400 }, statuses(raw(port, "GET / HTTP/1.1\r\nBad Header\r\n\r\n")))
      assert.are.same({ 400 }, statuses(raw(port, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")))
      assert.are.same({ 400 }, statuses(raw(port, "\0\1\2\3 / HTTP/1.1\r\n\r\n")))
      -- both framings at once (request smuggling) is refused
      assert.are.same({ 400 }, statuses(raw(port, "POST / HTTP/1.1\r\nContent-Length: 3\r\n" ..
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")))
      -- more than 100 header fields
      local many = {}
      for i = 1, 101 do many[i] = ("X-%d: %d\r\n"):format(i, i) end
      assert.are.same({ 431 }, statuses(raw(port, "GET / HTTP/1.1\r\n" .. table.concat(many) .. "\r\n")))
      -- a request cut off mid-head or mid-body: the connection just closes
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      c:write("GET / HTTP/1.1\r\nHo")
      c:shutdown()
      local out = c:read_all()
      c:close()
      assert.are.same({ 400 }, statuses(out))
      c = assert(loom.tcp.connect("127.0.0.1", port))
      c:write("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
      c:close()
      -- the server still serves
      local r = assert(http.request { method = "POST", url = ("http://127.0.0.1:%d/"):format(port), body = "ok" })
      assert.are.equal("ok", r.body)
      done(srv)
    end)
  end)

  it("turns a handler's error into a 500, logs its traceback and keeps serving", function()
    local out, status = helper.lua([[
      local loom = require "loom"
      loom.run(function()
        local srv = assert(loom.http.serve("127.0.0.1", 0, function(req)
          if req.path == "/boom" then error("handler exploded") end
          return 200, {}, "fine"
        end))
        local _, port = srv:address()
        local base = "http://127.0.0.1:" .. port
        local r = assert(loom.http.get(base .. "/boom"))
        print("status", r.status)
        r = assert(loom.http.get(base .. "/ok"))
        print("then", r.status, r.body)
        loom.http.close_idle()
        srv:close()
      end)
    ]])
    assert.are.equal(0, status)
    assert.matches("status\t500", out)
    assert.matches("then\t200\tfine", out)
    assert.matches("http handler failed %(GET /boom%).-handler exploded", out)
    assert.matches("stack traceback", out)
    -- the user's frames, not loom's serving loop below them
    assert.matches("%(command line%):4: in function", out)
    assert.not_matches("loom/http", out)
  end)

  it("drops a client that never reads its responses, and serves others meanwhile", function()
    run(function()
      local big = ("x"):rep(8 * 1024 * 1024)
      local srv, port, base = serve(function(req)
        if req.path == "/big" then return 200, {}, big end
        return 200, {}, "small"
      end, { send_timeout = 0.3 })
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      c:write("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
      local t0 = loom.now()
      local r = assert(http.get(base .. "/small"))
      assert.are.equal("small", r.body)
      assert(loom.now() - t0 < helper.upper(0, 0.2))
      loom.sleep(0.5)
      -- the server gave up on the stalled connection: reading now ends early
      local got, n = 0, 0
      while true do
        local s = c:read()
        if not s then break end
        got = got + #s
        n = n + 1
      end
      assert(got < #big, "the whole response was sent to a client that did not read")
      c:close()
      done(srv)
    end)
  end)

  it("cancels a response stuck on a client that does not read when close times out", function()
    run(function()
      local big = ("y"):rep(8 * 1024 * 1024)
      local srv, port = serve(function() return 200, {}, big end) -- send_timeout stays 30 s
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      c:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      loom.sleep(0.05) -- the response fills the socket buffers and waits
      local t = helper.elapsed(srv.close, srv, 0.1)
      assert(t >= 0.09 and t < helper.upper(0.09, 0.5), t)
      c:close()
    end)
  end)

  it("closes gracefully: idle connections at once, requests in flight finish", function()
    run(function()
      local started = loom.event()
      local srv, port, base = serve(function(req)
        if req.path == "/slow" then
          started:set()
          loom.sleep(0.2)
        end
        return 200, {}, "done " .. req.path
      end)
      local idle = assert(loom.tcp.connect("127.0.0.1", port))
      idle:write("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
      local first = idle:read_until("done /a")
      assert.is_string(first)
      local inflight = loom.spawn(http.get, base .. "/slow")
      started:wait()
      local t = helper.elapsed(srv.close, srv)
      assert(t > 0.1 and t < helper.upper(0.1, 0.5), t)
      local r = assert(inflight:await())
      assert.are.same({ 200, "done /slow", "close" }, { r.status, r.body, r.headers.connection })
      assert.are.same({ nil, "eof", "EOF" }, { idle:read() })
      idle:close()
      assert.is_nil((loom.tcp.connect("127.0.0.1", port)))
      http.close_idle()
    end)
  end)

  it("leaves no handle behind after many keep-alive and short connections", function()
    run(function()
      local srv, port, base = serve(function() return 200, {}, "x" end)
      for _ = 1, 300 do assert(http.get(base .. "/")) end
      for _ = 1, 100 do
        assert.are.same({ 200 }, statuses(raw(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")))
      end
      done(srv)
    end, 20)
  end)

  it("checks its arguments", function()
    run(function()
      assert.has_error(function() http.serve("127.0.0.1", nil, function() end) end,
        "bad argument #2 to 'serve' (number expected, got nil)")
      assert.has_error(function() http.serve("127.0.0.1", 0, "nope") end,
        "bad argument #3 to 'serve' (function expected, got string)")
      local logged = {}
      local srv, _, base = serve(function(req, res)
        if req.path == "/badstatus" then res:status(42) end
        if req.path == "/badheader" then return 200, { ["X"] = "a\r\nInjected: 1" }, "" end
        if req.path == "/badreturn" then return 200, "not a table", "" end
        return 200, {}, ""
      end, { on_error = function(msg) logged[#logged + 1] = msg end })
      local r = assert(http.get(base .. "/badstatus"))
      assert.are.equal(500, r.status)
      r = assert(http.get(base .. "/badheader"))
      assert.are.equal(500, r.status)
      assert.is_nil(r.headers.injected)
      r = assert(http.get(base .. "/badreturn"))
      assert.are.equal(500, r.status)
      assert.are.equal(3, #logged)
      assert.matches("GET /badstatus.-bad argument #1 to 'status' %(status code expected%)", logged[1])
      assert.matches("GET /badheader.-invalid character in value", logged[2])
      assert.matches("GET /badreturn.-handler returned a string as headers", logged[3])
      done(srv)
    end)
  end)
end)

describe("loom.http client", function()
  it("skips interim 1xx responses and returns the final one", function()
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        while s:read_until("\r\n\r\n") do
          s:write("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" ..
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
        end
      end))
      local _, port = srv:address()
      for _ = 1, 2 do -- and the connection stays usable
        local r = assert(http.get(("http://127.0.0.1:%d/"):format(port)))
        assert.are.equal(200, r.status)
        assert.are.equal("final", r.body)
      end
      http.close_idle(); srv:close()
    end)
  end)

  it("gives up on an endless stream of 1xx responses", function()
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        s:read_until("\r\n\r\n")
        for _ = 1, 50 do s:write("HTTP/1.1 102 Processing\r\n\r\n") end
        loom.sleep(0.2)
      end))
      local _, port = srv:address()
      local r, err, code = http.get(("http://127.0.0.1:%d/"):format(port))
      assert.is_nil(r)
      assert.are.equal("too many interim (1xx) responses", err)
      assert.are.equal("EPROTO", code)
      http.close_idle(); srv:close()
    end)
  end)

  it("applies each request's max_body_size, on a reused connection too, with a 64 MiB default", function()
    run(function()
      local big = ("b"):rep(5 * 1024 * 1024)
      local srv, _, base = serve(function(req, res)
        if req.path == "/endless" then -- chunked, for ever
          local chunk = ("e"):rep(1024 * 1024)
          while res:write(chunk) do end
          return
        end
        return 200, {}, big
      end)
      assert.are.equal(#big, #assert(http.get(base .. "/big")).body)
      local r, err, code = http.get(base .. "/big", { max_body_size = 1000 }) -- the same pooled connection
      assert.is_nil(r)
      assert.are.equal("body too large", err)
      assert.are.equal("EBODY", code)
      r, err, code = http.get(base .. "/endless")
      assert.is_nil(r)
      assert.are.same({ "body too large", "EBODY" }, { err, code })
      done(srv)
    end, 20)
  end)

  it("reuses kept-alive connections and keeps to the per-host limit", function()
    run(function()
      local conns, active, peak = 0, 0, 0
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        conns = conns + 1
        active = active + 1
        peak = math.max(peak, active)
        while true do
          local head = s:read_until("\r\n\r\n")
          if not head then break end
          loom.sleep(0.01)
          s:write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        end
        active = active - 1
      end))
      local _, port = srv:address()
      local base = "http://127.0.0.1:" .. port
      for _ = 1, 5 do assert.are.equal("ok", assert(http.get(base .. "/")).body) end
      assert.are.equal(1, conns)
      http.close_idle()
      while active > 0 do loom.sleep(0.005) end
      peak = 0
      local tasks = {}
      for i = 1, 12 do tasks[i] = loom.spawn(http.get, base .. "/", { max_per_host = 3 }) end
      for _, t in ipairs(tasks) do assert.are.equal("ok", assert(t:await()).body) end
      assert(peak <= 3, peak)
      http.close_idle()
      srv:close()
    end)
  end)

  it("reads content-length, chunked and close-delimited bodies, and HEAD", function()
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        local head = s:read_until("\r\n\r\n")
        local path = head:match("^%u+ (%S+)")
        if path == "/chunked" then
          s:write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        elseif path == "/close" then
          s:write("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
          return
        elseif path == "/head" then
          s:write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        else
          s:write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello")
        end
        s:read_until("\r\n\r\n") -- the client may reuse the connection; wait for it to close
      end))
      local _, port = srv:address()
      local base = "http://127.0.0.1:" .. port
      local r = assert(http.get(base .. "/chunked"))
      assert.are.equal("abcde", r.body)
      r = assert(http.get(base .. "/close"))
      assert.are.equal("until the end", r.body)
      r = assert(http.request { method = "HEAD", url = base .. "/head" })
      assert.are.same({ 200, "", "100" }, { r.status, r.body, r.headers["content-length"] })
      r = assert(http.get(base .. "/plain"))
      assert.are.same({ "hello", { "a=1", "b=2" } }, { r.body, r.headers["set-cookie"] })
      http.close_idle()
      srv:close()
    end)
  end)

  it("streams a response body with read()", function()
    run(function()
      local srv, _, base = serve(function(_, res)
        for i = 1, 5 do
          res:write(("%d"):format(i):rep(1000))
          loom.sleep(0.005)
        end
      end)
      local r = assert(http.get(base .. "/", { stream = true }))
      assert.is_nil(r.body)
      local parts = {}
      for chunk in r.read, r do parts[#parts + 1] = chunk end
      assert(#parts >= 2)
      assert.are.equal(5000, #table.concat(parts))
      assert.is_nil(r:read())
      done(srv)
    end)
  end)

  it("follows redirects, and stops when told or when they loop", function()
    run(function()
      local base
      local srv, _
      srv, _, base = serve(function(req)
        if req.path == "/old" then return 302, { Location = "/new" }, "" end
        if req.path == "/form" then return 303, { Location = base .. "/new" }, "" end
        if req.path == "/loop" then return 302, { Location = "/loop" }, "" end
        return 200, {}, req.method .. " " .. req.path
      end)
      local r = assert(http.get(base .. "/old"))
      assert.are.same({ 200, "GET /new", base .. "/new" }, { r.status, r.body, r.url })
      r = assert(http.request { method = "POST", url = base .. "/form", body = "x" })
      assert.are.equal("GET /new", r.body)
      r = assert(http.get(base .. "/old", { redirects = 0 }))
      assert.are.same({ 302, "/new" }, { r.status, r.headers.location })
      assert.are.same({ nil, "too many redirects (more than 5)", "EREDIRECT" }, { http.get(base .. "/loop") })
      done(srv)
    end)
  end)

  it("times out as a whole, and fails clearly on bad URLs, refusals and https", function()
    run(function()
      local srv, _, base = serve(function()
        loom.sleep(1)
        return 200, {}, "late"
      end)
      local t = helper.elapsed(function()
        assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { http.get(base .. "/", { timeout = 0.1 }) })
      end)
      assert(t < helper.upper(0, 0.3), t)
      -- https to a server that speaks plain HTTP: a TLS failure, not a hang or a crash
      local _, err, c = http.get(base:gsub("^http:", "https:") .. "/", { timeout = 2 })
      assert.are.equal("EPROTO", c, err)
      local _, _, code = http.get("ftp://example.org/")
      assert.are.equal("EINVAL", code)
      _, _, code = http.get("not a url")
      assert.are.equal("EINVAL", code)
      _, _, code = http.get("http://127.0.0.1:1/")
      assert.are.equal("ECONNREFUSED", code)
      assert.has_error(function() http.request { method = "GET" } end,
        "bad argument #1 to 'request' (string expected, got nil)")
      assert.has_error(function() http.get(base, { body = 5 }) end,
        "bad argument #1 to 'request' (body: string expected, got number)")
      srv:close(0)
      http.close_idle()
    end)
  end)

  it("returns nil, msg, code for garbage, truncated and reset responses", function()
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        local head = s:read_until("\r\n\r\n")
        local path = head and head:match("^%u+ (%S+)")
        if path == "/garbage" then
          s:write("SPAM SPAM SPAM\r\n\r\n")
        elseif path == "/short" then
          s:write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        elseif path == "/badchunk" then
          s:write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        end
        -- /reset: closed without a word
      end))
      local _, port = srv:address()
      local base = "http://127.0.0.1:" .. port
      for path, want in pairs { ["/garbage"] = "EPROTO", ["/short"] = "EOF", ["/badchunk"] = "EPROTO", ["/reset"] = "EOF" } do
        local res, msg, code = http.get(base .. path, { timeout = 2 })
        assert.is_nil(res, path)
        assert.is_string(msg, path)
        assert.are.equal(want, code, path .. ": " .. tostring(msg))
      end
      http.close_idle()
      srv:close()
    end)
  end)

  it("retries once on a pooled connection the server has closed", function()
    run(function()
      local srv, _, base = serve(function() return 200, {}, "fresh" end, { keepalive_timeout = 0.05 })
      assert(http.get(base .. "/"))
      loom.sleep(0.15) -- the server closes the idle connection
      local r = assert(http.get(base .. "/"))
      assert.are.equal("fresh", r.body)
      done(srv)
    end)
  end)
end)
