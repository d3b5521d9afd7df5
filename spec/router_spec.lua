-- loom.http.router, JSON in and out, and loom.http.error, against loom's
-- own server and client.
local loom = require "loom"
local helper = require "helper"
local run = helper.run
local http = loom.http
local serve, done = helper.http_serve, helper.http_done

-- status, body, headers of one request
local function call(base, method, path, body, headers)
  local res = assert(http.request { method = method, url = base .. path, body = body, headers = headers })
  return res.status, res.body, res.headers
end

-- status, body
local function sb(...)
  local status, body = call(...)
  return status, body
end

local JSON = { ["Content-Type"] = "application/json" }

describe("loom.http.router", function()
  it("routes by method and pattern: static before :param before *wildcard, 404 and 405 with Allow", function()
    run(function()
      local app = http.router()
      app:get("/users/me", function() return "me" end)
      app:get("/users/:id", function(req) return "user " .. req.params.id end)
      app:put("/users/:id", function(req) return "put " .. req.params.id end)
      app:get("/users/:id/posts/:post", function(req) return req.params.id .. "/" .. req.params.post end)
      app:get("/files/*path", function(req) return "file [" .. req.params.path .. "]" end)
      app:route("delete", "/users/:id", function() return 204 end)
      local srv, base = serve(app)
      assert.are.same({ 200, "me" }, { sb(base, "GET", "/users/me") })
      assert.are.same({ 200, "user 42" }, { sb(base, "GET", "/users/42") })
      assert.are.same({ 200, "user a/b" }, { sb(base, "GET", "/users/a%2Fb") }) -- one segment, decoded
      assert.are.same({ 200, "put 7" }, { sb(base, "PUT", "/users/7") })
      assert.are.same({ 200, "3/9" }, { sb(base, "GET", "/users/3/posts/9") })
      assert.are.same({ 200, "file [css/site.css]" }, { sb(base, "GET", "/files/css/site.css") })
      assert.are.same({ 200, "file []" }, { sb(base, "GET", "/files") })
      -- empty segments are skipped, escapes decoded per segment, the query is not the path's
      assert.are.same({ 200, "file [css/site.css]" }, { sb(base, "GET", "//files//css//site.css/") })
      assert.are.same({ 200, "file [a b/c%2Fd]" }, { sb(base, "GET", "/files/a%20b/c%252Fd?x=/y") })
      assert.are.same({ 200, "file [x/y]" }, { sb(base, "GET", "/files/x%2Fy") })
      assert.are.same({ 200, "user 42" }, { sb(base, "GET", "/users/42/?q=1") })
      assert.are.equal(204, (call(base, "DELETE", "/users/7")))
      local status, body = call(base, "GET", "/nowhere")
      assert.are.same({ 404, "not found\n" }, { status, body })
      local st, b, h = call(base, "POST", "/users/7")
      assert.are.same({ 405, "method not allowed\n" }, { st, b })
      assert.are.equal("DELETE, GET, HEAD, OPTIONS, PUT", h.allow)
      st, b, h = call(base, "HEAD", "/users/42") -- GET answers HEAD, without the body
      assert.are.same({ 200, "" }, { st, b })
      assert.are.equal("7", h["content-length"])
      st, b, h = call(base, "OPTIONS", "/users/42")
      assert.are.same({ 204, "" }, { st, b })
      assert.are.equal("DELETE, GET, HEAD, OPTIONS, PUT", h.allow)
      done(srv)
    end)
  end)

  it("runs middleware in order around every request, 404s included; one may answer by itself", function()
    run(function()
      local app, log = http.router(), {}
      app:use(function(req, _, next)
        local status, headers, body = next()
        log[#log + 1] = ("%s %s %s"):format(req.method, req.path, tostring(status))
        headers = headers or {}
        headers["X-Seen"] = "yes"
        return status, headers, body
      end)
      app:use(function(req, _, next)
        if req.headers.authorization ~= "Bearer t" then return 401, {}, "who are you\n" end
        return next()
      end)
      app:get("/secret", function() return 200, {}, "the secret" end)
      local srv, base = serve(app)
      local st, body, h = call(base, "GET", "/secret")
      assert.are.same({ 401, "who are you\n", "yes" }, { st, body, h["x-seen"] })
      st, body = call(base, "GET", "/secret", nil, { Authorization = "Bearer t" })
      assert.are.same({ 200, "the secret" }, { st, body })
      st = call(base, "GET", "/missing", nil, { Authorization = "Bearer t" })
      assert.are.equal(404, st)
      assert.are.same({ "GET /secret 401", "GET /secret 200", "GET /missing 404" }, log)
      done(srv)
    end)
  end)

  it("mounts sub-routers under a prefix, their parameters and middleware with them", function()
    run(function()
      local api, app = http.router(), http.router()
      api:use(function(_, _, next)
        local s, h, b = next()
        h = h or {}
        h["X-Api"] = "v1"
        return s, h, b
      end)
      api:get("/items/:n", function(req) return "item " .. req.params.n end)
      api:get("/", function() return "api root" end)
      app:get("/", function() return "home" end)
      app:mount("/api/v1", api)
      local srv, base = serve(app)
      local st, body, h = call(base, "GET", "/api/v1/items/5")
      assert.are.same({ 200, "item 5", "v1" }, { st, body, h["x-api"] })
      assert.are.same({ 200, "api root" }, { sb(base, "GET", "/api/v1") })
      assert.are.same({ 200, "home" }, { sb(base, "GET", "/") })
      assert.are.equal(404, (call(base, "GET", "/api/v1/nothing")))
      done(srv)
    end)
  end)

  it("finds its route among a thousand", function()
    run(function()
      local app = http.router()
      for i = 1, 1000 do
        app:get(("/r%d/:x"):format(i), function(req) return ("%d:%s"):format(i, req.params.x) end)
      end
      local srv, base = serve(app)
      for _, i in ipairs({ 1, 500, 1000 }) do
        assert.are.same({ 200, ("%d:z"):format(i) }, { sb(base, "GET", ("/r%d/z"):format(i)) })
      end
      done(srv)
    end)
  end)

  it("refuses bad routes when they are added", function()
    local app = http.router()
    app:get("/a/:id", print)
    assert.has_error(function() app:get("a", print) end,
      "bad argument #1 to 'get' (pattern must be a path starting with '/')")
    assert.has_error(function() app:get("/a/:id", print) end, "bad argument #1 to 'get' (GET /a/:id is routed twice)")
    assert.has_error(function() app:post("/a/:name", print) end,
      "bad argument #1 to 'post' ('/a/:name': parameter ':name' where another route has ':id')")
    assert.has_error(function() app:get("/x/*rest/more", print) end,
      "bad argument #1 to 'get' ('/x/*rest/more': a wildcard must be the last segment)")
    assert.has_error(function() app:get("/b", 42) end, "bad argument #2 to 'get' (handler expected, got number)")
    assert.has_error(function() app:route("BREW", "/pot", print) end,
      "bad argument #1 to 'route' (method must be GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or '*')")
    assert.has_error(function() app:use("x") end, "bad argument #1 to 'use' (function expected, got string)")
    assert.has_error(function() app:mount("/api/", http.router()) end,
      "bad argument #1 to 'mount' (prefix must be a plain path such as '/api' (no parameter, no trailing slash))")
  end)
end)

describe("JSON and loom.http.error", function()
  it("sends a returned table as JSON, reads req:json(), answers bad JSON or a wrong type with 400", function()
    run(function()
      local cjson = require "cjson"
      local app = http.router()
      app:get("/t", function() return { ok = true, list = { 1, 2, 3 } } end)
      app:post("/echo", function(req)
        local v = req:json()
        return 201, { ["X-Kind"] = type(v) }, { got = v }
      end)
      app:get("/res", function(_, res) res:json({ via = "res" }, 202) end)
      local srv, base = serve(app, { max_body_size = 100 })
      local st, body, h = call(base, "GET", "/t")
      assert.are.equal(200, st)
      assert.are.equal("application/json", h["content-type"])
      assert.are.same({ ok = true, list = { 1, 2, 3 } }, cjson.decode(body))
      st, body, h = call(base, "POST", "/echo", '{"name":"ada","n":[1,2]}', JSON)
      assert.are.same({ 201, "table" }, { st, h["x-kind"] })
      assert.are.same({ got = { name = "ada", n = { 1, 2 } } }, cjson.decode(body))
      st, body = call(base, "POST", "/echo", '{"name":', JSON)
      assert.are.equal(400, st)
      assert.matches("^invalid JSON: ", body)
      st, body = call(base, "POST", "/echo", "{}", { ["Content-Type"] = "text/plain" })
      assert.are.same({ 400, "expected a JSON body (Content-Type: application/json), got 'text/plain'\n" },
        { st, body })
      st = call(base, "POST", "/echo", '{"x":"' .. ("y"):rep(200) .. '"}', JSON)
      assert.are.equal(413, st) -- bounded by the body limit
      st, body, h = call(base, "GET", "/res")
      assert.are.same({ 202, '{"via":"res"}', "application/json" }, { st, body, h["content-type"] })
      local r = assert(http.get(base .. "/t", { query = { page = 2 } }))
      assert.are.same({ ok = true, list = { 1, 2, 3 } }, assert(r:json())) -- the client's res:json()
      assert.are.equal(base .. "/t?page=2", r.url) -- the query reflected
      r = assert(http.get(base .. "/res"))
      local _, err, code = assert(http.get(base .. "/nowhere")):json()
      assert.are.same({ "EPROTO" }, { code })
      assert.matches("^invalid JSON", err)
      assert.are.equal("res", r:json().via)
      done(srv)
    end)
  end)

  it("loom.http.error answers with its status and message and is not logged; other errors are 500s", function()
    run(function()
      local logged = {}
      local app = http.router()
      app:get("/users/:id", function(req)
        if req.params.id ~= "1" then http.error(404, "no user " .. req.params.id) end
        return "ada"
      end)
      app:get("/boom", function() error("kaput") end)
      local srv, base = serve(app, { on_error = function(msg) logged[#logged + 1] = msg end })
      assert.are.same({ 404, "no user 7\n" }, { sb(base, "GET", "/users/7") })
      assert.are.same({ 200, "ada" }, { sb(base, "GET", "/users/1") })
      assert.are.equal(0, #logged)
      assert.are.same({ 500, "internal server error\n" }, { sb(base, "GET", "/boom") })
      assert.are.equal(1, #logged)
      assert.matches("kaput", logged[1])
      assert.has_error(function() http.error(200) end, "bad argument #1 to 'error' (status must be an integer 400-599)")
      done(srv)
    end)
  end)

  it("app:errors answers 404s, 405s (Allow kept) and loom.http.error the application's way", function()
    run(function()
      local cjson = require "cjson"
      local app = http.router()
      app:errors(function(req, status, message) return status, {}, { error = message, path = req.path } end)
      app:get("/users/:id", function(req) http.error(404, "no user " .. req.params.id) end)
      app:post("/json", function(req) return req:json() end)
      local srv, base = serve(app)
      local st, body, h = call(base, "GET", "/users/9")
      assert.are.same({ 404, "application/json", { error = "no user 9", path = "/users/9" } },
        { st, h["content-type"], cjson.decode(body) })
      st, body = call(base, "GET", "/nope")
      assert.are.same({ 404, { error = "not found", path = "/nope" } }, { st, cjson.decode(body) })
      st, body, h = call(base, "DELETE", "/users/9")
      assert.are.same({ 405, "GET, HEAD, OPTIONS", "method not allowed" }, { st, h.allow, cjson.decode(body).error })
      st, body = call(base, "POST", "/json", "[1,", JSON)
      assert.are.equal(400, st)
      assert.matches("^invalid JSON", cjson.decode(body).error)
      done(srv)
    end)
  end)
end)

describe("streaming and client disconnects", function()
  it("res:sse() sends events (multi-line data, ids, types), keep-alive comments, and ends", function()
    run(function()
      local app = http.router()
      app:get("/events", function(_, res)
        local events = assert(res:sse({ keepalive = 0.05 }))
        events:send("hello")
        events:send({ event = "tick", id = 7, data = "line one\nline two" })
        loom.sleep(0.12) -- idle: keep-alive comments go out
        events:send({ data = "bye", retry = 1500 })
        events:close()
      end)
      local srv, base = serve(app)
      local r = assert(http.request { url = base .. "/events", stream = true })
      assert.are.same({ 200, "text/event-stream", "no-cache" },
        { r.status, r.headers["content-type"], r.headers["cache-control"] })
      local parts = {}
      while true do
        local chunk = r:read()
        if not chunk then break end
        parts[#parts + 1] = chunk
      end
      local text = table.concat(parts)
      assert.are.equal(1, select(2, text:gsub("^data: hello\n\n", "")))
      assert.matches("event: tick\nid: 7\ndata: line one\ndata: line two\n\n", text, 1, true)
      assert.matches("retry: 1500\ndata: bye\n\n$", text)
      local _, comments = text:gsub(": keepalive\n", "")
      assert.is_true(comments >= 1, text)
      -- the connection stays usable after the stream
      assert.are.equal(404, (call(base, "GET", "/other")))
      done(srv)
    end)
  end)

  it("cancels a handler whose client goes away, so server:close() does not wait for it", function()
    run(function()
      local cleaned, finished = loom.event(), false
      local app = http.router()
      app:get("/slow", function()
        local _ <close> = setmetatable({}, { __close = function() cleaned:set() end })
        loom.sleep(5)
        finished = true
        return "late"
      end)
      local srv = serve(app)
      local _, port = srv:address()
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      c:write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
      loom.sleep(0.1)
      local t0 = loom.now()
      c:close()
      assert.is_true(cleaned:wait(2), "the handler was cancelled")
      assert.is_true(loom.now() - t0 < 1)
      assert.is_false(finished)
      local t1 = loom.now()
      srv:close()
      assert.is_true(loom.now() - t1 < 0.5)
    end)
  end)

  it("with cancel_on_disconnect = false the handler runs to its end", function()
    run(function()
      local finished = loom.event()
      local srv = serve(function()
        loom.sleep(0.3)
        finished:set()
        return "done"
      end, { cancel_on_disconnect = false })
      local _, port = srv:address()
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      c:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      loom.sleep(0.05)
      c:close()
      assert.is_true(finished:wait(2))
      srv:close()
    end)
  end)

  it("a client that half-closes after its request is taken as gone, unless cancel_on_disconnect = false", function()
    run(function()
      local srv = serve(function() loom.sleep(0.1); return "answer" end, { cancel_on_disconnect = false })
      local _, port = srv:address()
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      c:write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      c:shutdown()
      local out = c:read_all()
      c:close()
      assert.matches("^HTTP/1%.1 200", out or "")
      assert.matches("answer$", out)
      srv:close()
    end)
  end)
end)

describe("logging", function()
  it("access_log writes a Common Log Format line per request, errors and loom.http.error included", function()
    run(function()
      local lines = {}
      local app = http.router()
      app:use(http.access_log(function(line) lines[#lines + 1] = line end))
      app:get("/ok", function() return "fine" end)
      app:get("/gone", function() http.error(410, "gone") end)
      app:get("/boom", function() error("kaput") end)
      local srv, base = serve(app, { on_error = function() end })
      call(base, "GET", "/ok?x=1")
      call(base, "GET", "/gone")
      call(base, "GET", "/boom")
      call(base, "GET", "/nope")
      done(srv)
      local function line(target, tail)
        return '^127%.0%.0%.1 %- %- %[%d%d/%a%a%a/%d%d%d%d:%d%d:%d%d:%d%d [+-]%d%d%d%d%] "GET ' .. target ..
          ' HTTP/1%.1" ' .. tail .. "$"
      end
      assert.matches(line("/ok%?x=1", "200 4"), lines[1])
      assert.matches(line("/gone", "410 %-"), lines[2])
      assert.matches(line("/boom", "500 %-"), lines[3])
      assert.matches(line("/nope", "404 10"), lines[4])
    end)
  end)

  it("reports a handler's error with the user's frames, loom's own trimmed", function()
    run(function()
      local logged
      local app = http.router()
      local function deep() error("kaput") end
      app:use(function(_, _, next) return next() end)
      app:get("/boom", function() deep() end)
      local srv, base = serve(app, { on_error = function(msg) logged = msg end })
      call(base, "GET", "/boom")
      done(srv)
      assert.matches("router_spec%.lua:%d+: kaput", logged)
      assert.matches("in upvalue 'deep'", logged)
      assert.is_nil(logged:find("/loom/", 1, true), logged)
    end)
  end)
end)

describe("forms", function()
  local function multipart(boundary, parts)
    local out = {}
    for _, p in ipairs(parts) do
      out[#out + 1] = "--" .. boundary .. "\r\n" .. p .. "\r\n"
    end
    return table.concat(out) .. "--" .. boundary .. "--\r\n"
  end

  it("reads urlencoded fields and multipart fields and files, in memory or to a directory", function()
    run(function()
      local dir = assert(loom.fs.mkdtemp("/tmp/loom-upload-"))
      local app, got = http.router(), {}
      app:post("/mem", function(req) got.fields, got.files = req:form() return "ok" end)
      app:post("/disk", function(req) got.fields, got.files = req:form({ dir = dir }) return "ok" end)
      local srv, base = serve(app, { max_body_size = 4 * 1024 * 1024 })
      assert.are.equal(200, (call(base, "POST", "/mem", "a=1&b=x+y&c=%C3%A9",
        { ["Content-Type"] = "application/x-www-form-urlencoded" })))
      assert.are.same({ a = "1", b = "x y", c = "é" }, got.fields)
      local blob = {}
      for i = 1, 200000 do blob[i] = string.char(i % 256) end
      blob = table.concat(blob) -- crosses many reads, holds CR and LF bytes
      local body = multipart("XyZ", {
        'Content-Disposition: form-data; name="title"\r\n\r\nHello\r\nworld',
        'Content-Disposition: form-data; name="photo"; filename="../../etc/me.png"\r\nContent-Type: image/png\r\n\r\n' .. blob,
        'Content-Disposition: form-data; name="empty"\r\n\r\n',
      })
      local H = { ["Content-Type"] = "multipart/form-data; boundary=XyZ" }
      assert.are.equal(200, (call(base, "POST", "/mem", body, H)))
      assert.are.same({ title = "Hello\r\nworld", empty = "" }, got.fields)
      local f = got.files.photo
      assert.are.same({ "me.png", "image/png", #blob }, { f.filename, f.content_type, f.size })
      assert.is_true(f.data == blob, "every byte of the file")
      assert.are.equal(f, got.files[1])
      assert.are.equal(200, (call(base, "POST", "/disk", body, H)))
      f = got.files.photo
      assert.is_nil(f.data)
      assert.are.equal(dir, f.path:match("^(.*)/[^/]+$"))
      assert.is_true(loom.fs.read_file(f.path) == blob, "the file on disk")
      done(srv)
      os.execute("rm -rf " .. dir)
    end)
  end)

  it("answers 400 for what is not a form or is malformed, 413 over a part's limit", function()
    run(function()
      local app = http.router()
      app:post("/f", function(req) req:form({ max_field_size = 10, max_parts = 3 }) return "ok" end)
      local srv, base = serve(app)
      local H = { ["Content-Type"] = "multipart/form-data; boundary=B" }
      local st, body = call(base, "POST", "/f", "{}", { ["Content-Type"] = "application/json" })
      assert.are.same({ 400, "expected a form (application/x-www-form-urlencoded or multipart/form-data), got 'application/json'\n" },
        { st, body })
      assert.are.equal(400, (call(base, "POST", "/f", "x", { ["Content-Type"] = "multipart/form-data" })))
      st, body = call(base, "POST", "/f", multipart("B", { 'Content-Disposition: form-data; name="a"\r\n\r\n' .. ("x"):rep(11) }), H)
      assert.are.same({ 413, "part 'a' is larger than 10 bytes\n" }, { st, body })
      local four = {}
      for i = 1, 4 do four[i] = ('Content-Disposition: form-data; name="f%d"\r\n\r\nv'):format(i) end
      assert.are.equal(413, (call(base, "POST", "/f", multipart("B", four), H)))
      st, body = call(base, "POST", "/f", "--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end", H)
      assert.are.same({ 400, "the multipart body ended before its closing delimiter\n" }, { st, body })
      assert.are.equal(400, (call(base, "POST", "/f", "--B\r\nX-Nothing: 1\r\n\r\nv\r\n--B--\r\n", H)))
      done(srv)
    end)
  end)
end)

describe("the client's decoding and retries", function()
  it("asks for gzip and decodes it (nginx with gzip on), deflate too, within max_body_size", function()
    run(function()
      local text = ("the quick brown fox jumps over the lazy dog\n"):rep(2000)
      local ngx = helper.nginx({ ["t.txt"] = text }, function(port, root)
        return ("gzip on; gzip_types text/plain; gzip_min_length 0; server { listen 127.0.0.1:%d; root %s; }")
          :format(port, root)
      end)
      helper.wait_port(ngx.port)
      local url = ("http://127.0.0.1:%d/t.txt"):format(ngx.port)
      local r = assert(http.get(url))
      assert.are.equal("gzip", r.headers["content-encoding"])
      assert.is_true(r.body == text, "decoded")
      local _, err, code = http.get(url, { max_body_size = 1000 }) -- the limit counts decoded bytes
      assert.are.same({ "body too large", "EBODY" }, { err, code })
      r = assert(http.get(url, { decompress = false }))
      assert.is_nil(r.headers["content-encoding"]) -- nothing asked, nothing compressed
      r = assert(http.get(url, { headers = { ["Accept-Encoding"] = "gzip" } }))
      assert.are.equal("gzip", r.headers["content-encoding"])
      assert.is_true(#r.body < #text, "the caller's own Accept-Encoding: left encoded")
      http.close_idle()
      ngx.stop()
      -- deflate (a zlib stream), and a corrupt body
      local z = assert(loom.process.run { "env", "-u", "LD_PRELOAD", "python3", "-c",
        "import sys, zlib; sys.stdout.buffer.write(zlib.compress(b'deflated ' * 100))" })
      local srv, base = serve(function(req)
        if req.path == "/bad" then return 200, { ["Content-Encoding"] = "gzip" }, "not gzip at all" end
        return 200, { ["Content-Encoding"] = "deflate" }, z
      end)
      assert.are.equal(("deflated "):rep(100), assert(http.get(base .. "/z")).body)
      _, err, code = http.get(base .. "/bad")
      assert.are.same({ "corrupt gzip body", "EPROTO" }, { err, code })
      done(srv)
    end, 10)
  end)

  it("retries idempotent requests on 502/503/504 and refused connections, never a POST", function()
    run(function()
      local hits = 0
      local srv, base = serve(function()
        hits = hits + 1
        if hits < 3 then return 503, {}, "busy" end
        return "finally"
      end)
      local t0 = loom.now()
      local r = assert(http.get(base, { retries = 3 }))
      assert.are.same({ 200, "finally", 3 }, { r.status, r.body, hits })
      assert.is_true(loom.now() - t0 >= 0.05 + 0.1) -- two back-offs: at least half of 0.1 and 0.2
      hits = 0
      r = assert(http.get(base, { retries = 1 }))
      assert.are.same({ 503, 2 }, { r.status, hits }) -- out of retries: the last answer
      hits = 0
      r = assert(http.request { url = base, method = "POST", body = "x", retries = 3 })
      assert.are.same({ 503, 1 }, { r.status, hits })
      done(srv)
      local port = helper.free_port()
      local late = loom.spawn(function()
        loom.sleep(0.15)
        return assert(http.serve("127.0.0.1", port, function() return "up" end))
      end)
      r = assert(http.get(("http://127.0.0.1:%d/"):format(port), { retries = 5 }))
      assert.are.equal("up", r.body)
      done(late:await())
      assert.has_error(function() http.get(base, { retries = -1 }) end,
        "bad argument #1 to 'request' (retries must be a count)")
    end, 10)
  end)
end)

describe("loom.http.session", function()
  it("keeps cookies per host and path, sends them back, honours Max-Age, Secure and Domain", function()
    run(function()
      local app = http.router()
      app:post("/login", function()
        return 200, { ["Set-Cookie"] = { "sid=abc; Path=/; HttpOnly", "pref=dark", "admin=1; Path=/admin",
          "sec=x; Secure", "evil=1; Domain=example.com", "gone=1; Max-Age=0" } }, "in"
      end)
      app:get("/me", function(req) return req.headers.cookie or "" end)
      app:get("/admin/me", function(req) return req.headers.cookie or "" end)
      app:post("/logout", function() return 200, { ["Set-Cookie"] = { "sid=; Max-Age=0; Path=/" } }, "out" end)
      app:get("/hop", function() return 302, { Location = "/me", ["Set-Cookie"] = { "hop=1; Path=/" } }, "" end)
      local srv, base = serve(app)
      local s <close> = http.session { cookies = true, headers = { ["X-Client"] = "spec" } }
      assert.are.equal("in", assert(s:request { method = "POST", url = base .. "/login" }).body)
      assert.are.equal("sid=abc; pref=dark", assert(s:get(base .. "/me")).body)
      assert.are.equal("admin=1; sid=abc; pref=dark", assert(s:get(base .. "/admin/me")).body) -- longer path first
      local names = {}
      for _, c in ipairs(s.cookies:list()) do names[#names + 1] = c.name end
      assert.are.same({ "admin", "pref", "sec", "sid" }, names) -- evil (other domain) and gone refused
      assert.are.equal("sid=abc; pref=dark; hop=1", assert(s:get(base .. "/hop")).body) -- set on the redirect
      s:request { method = "POST", url = base .. "/logout" }
      assert.are.equal("pref=dark; hop=1", assert(s:get(base .. "/me")).body)
      assert.are.equal("", assert(http.get(base .. "/me")).body) -- outside the session: no jar
      s.cookies:clear()
      assert.are.equal("", assert(s:get(base .. "/me")).body)
      s:close()
      assert.are.same({ nil, "session closed", "ECLOSED" }, { s:get(base .. "/me") })
      done(srv)
    end)
  end)
end)

describe("faults and bad input", function()
  it("bounds JSON nesting, refuses endless multipart parts, ignores malformed ranges", function()
    run(function()
      local root = assert(loom.fs.mkdtemp("/tmp/loom-static-"))
      assert(loom.fs.write_file(root .. "/f.txt", "0123456789"))
      local app = http.router()
      app:post("/json", function(req) req:json() return "ok" end)
      app:post("/form", function(req) req:form() return "ok" end)
      app:get("/files/*path", http.static(root))
      local srv, base = serve(app, { max_body_size = 64 * 1024 })
      local st, body = call(base, "POST", "/json", ("["):rep(5000) .. ("]"):rep(5000), JSON)
      assert.are.equal(400, st)
      assert.matches("^invalid JSON: .*nest", body)
      -- a part that never ends runs into the body limit
      st = call(base, "POST", "/form", "--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n" .. ("x"):rep(70000),
        { ["Content-Type"] = "multipart/form-data; boundary=B" })
      assert.are.equal(413, st)
      for range, want in pairs({ ["bytes=abc"] = 200, ["bytes=5-2"] = 200, ["items=0-1"] = 200,
                                 ["bytes=-0"] = 416, ["bytes=10-"] = 416, ["bytes=2-4"] = 206 }) do
        local s2, b2 = call(base, "GET", "/files/f.txt", nil, { Range = range })
        assert.are.equal(want, s2, range)
        if want == 206 then assert.are.equal("234", b2) end
      end
      done(srv)
      os.execute("rm -rf " .. root)
    end)
  end)

  it("a client gone mid-upload or mid-stream cancels the handler; an upload's files are removed", function()
    run(function()
      local dir = assert(loom.fs.mkdtemp("/tmp/loom-upload-"))
      local ended = {}
      local app = http.router()
      app:post("/up", function(req)
        local _ <close> = setmetatable({}, { __close = function(_, e) ended.up = loom.is_cancelled(e) end })
        req:form({ dir = dir })
        return "stored"
      end)
      app:get("/events", function(_, res)
        local _ <close> = setmetatable({}, { __close = function(_, e) ended.sse = loom.is_cancelled(e) end })
        local events = res:sse()
        while true do
          events:send("tick")
          loom.sleep(0.01)
        end
      end)
      local srv = serve(app, { max_body_size = 10 * 1024 * 1024 })
      local _, port = srv:address()
      local c = assert(loom.tcp.connect("127.0.0.1", port))
      c:write("POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 5000000\r\n\r\n",
        "--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"big.bin\"\r\n\r\n", ("x"):rep(100000))
      loom.sleep(0.1)
      c:close() -- gone mid-upload
      local s = assert(loom.tcp.connect("127.0.0.1", port))
      s:write("GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
      assert(s:read())
      loom.sleep(0.05)
      s:close() -- gone mid-stream
      local t0 = loom.now()
      while (ended.up == nil or ended.sse == nil) and loom.now() - t0 < 2 do loom.sleep(0.02) end
      assert.are.same({ up = true, sse = true }, ended)
      loom.sleep(0.05)
      local left = {}
      for name in loom.fs.dir(dir) do left[#left + 1] = name end
      assert.are.same({}, left) -- the half-received file was removed
      srv:close()
      os.execute("rm -rf " .. dir)
    end)
  end)

  it("bounds a gzip bomb by max_body_size after decoding", function()
    run(function()
      local bomb = assert(loom.process.run { "env", "-u", "LD_PRELOAD", "python3", "-c",
        "import sys, gzip; sys.stdout.buffer.write(gzip.compress(bytes(50 * 1024 * 1024), 9))" })
      assert.is_true(#bomb < 100 * 1024)
      local srv, base = serve(function() return 200, { ["Content-Encoding"] = "gzip" }, bomb end)
      local _, err, code = http.get(base, { max_body_size = 1024 * 1024 })
      assert.are.same({ "body too large", "EBODY" }, { err, code })
      _, err, code = http.get(base) -- the default limit, 64 MiB, is above 50 MiB: decoded whole
      assert.is_nil(code, err)
      done(srv)
    end, 15)
  end)
end)
