-- loom.http.static against loom's client and raw requests: bytes, types,
-- validators and 304s, ranges, and every way out of the directory refused.
local loom = require "loom"
local helper = require "helper"
local run = helper.run
local http = loom.http
local serve, done = helper.http_serve, helper.http_done

-- A directory to serve (and a secret beside it), made once.
local root = os.tmpname()
os.remove(root)
local function sh(cmd) assert(os.execute(cmd), cmd) end
sh(("mkdir -p %s/www/sub %s/www/noindex"):format(root, root))
local function put(path, data)
  local f = assert(io.open(root .. "/" .. path, "wb"))
  f:write(data)
  f:close()
end
put("www/index.html", "<h1>home</h1>")
put("www/site.css", "body{}")
put("www/sub/index.html", "sub home")
put("secret.txt", "top secret")
local big = {}
for i = 1, 300000 do big[i] = string.char(i % 251) end
big = table.concat(big) -- 300,000 bytes, no two neighbours alike
put("www/big.bin", big)
sh(("ln -s %s/secret.txt %s/www/leak.txt"):format(root, root))
sh(("ln -s %s %s/www/up"):format(root, root))
sh(("ln -s site.css %s/www/alias.css"):format(root))

-- The raw response to a request line (the client would normalise the path).
local function raw(port, target, extra)
  local c = assert(loom.tcp.connect("127.0.0.1", port))
  c:write(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n"):format(target, extra or ""))
  local out = c:read_all()
  c:close()
  return out
end

local function get(base, path, headers, method)
  return assert(http.request { url = base .. path, headers = headers, method = method })
end

describe("loom.http.static", function()
  teardown(function() os.execute("rm -rf " .. root) end)

  it("serves files with their type, length and validators, index files, HEAD, 405 for the rest", function()
    run(function()
      local srv, base = serve(http.static(root .. "/www"))
      local r = get(base, "/site.css")
      assert.are.same({ 200, "body{}", "text/css; charset=utf-8", "6", "bytes" },
        { r.status, r.body, r.headers["content-type"], r.headers["content-length"], r.headers["accept-ranges"] })
      assert.matches('^"%x+%-%x+"$', r.headers.etag)
      assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", r.headers["last-modified"])
      assert.are.equal("<h1>home</h1>", get(base, "/").body)
      assert.are.equal("sub home", get(base, "/sub/").body)
      assert.are.equal("body{}", get(base, "/alias.css").body) -- a link inside the directory is fine
      r = get(base, "/big.bin")
      assert.are.equal(#big, #r.body)
      assert.is_true(r.body == big, "every byte of the big file")
      assert.are.equal("application/octet-stream", r.headers["content-type"])
      r = get(base, "/site.css", nil, "HEAD")
      assert.are.same({ 200, "", "6" }, { r.status, r.body, r.headers["content-length"] })
      r = get(base, "/site.css", nil, "DELETE")
      assert.are.same({ 405, "GET, HEAD" }, { r.status, r.headers.allow })
      assert.are.equal(404, get(base, "/missing.txt").status)
      assert.are.equal(404, get(base, "/noindex/").status)
      done(srv)
    end)
  end)

  it("answers conditional requests with 304", function()
    run(function()
      local srv, base = serve(http.static(root .. "/www"))
      local r = get(base, "/site.css")
      local etag, lm = r.headers.etag, r.headers["last-modified"]
      r = get(base, "/site.css", { ["If-None-Match"] = etag })
      assert.are.same({ 304, "", etag }, { r.status, r.body, r.headers.etag })
      assert.are.equal(304, get(base, "/site.css", { ["If-None-Match"] = '"x", ' .. etag }).status)
      assert.are.equal(200, get(base, "/site.css", { ["If-None-Match"] = '"other"' }).status)
      assert.are.equal(304, get(base, "/site.css", { ["If-Modified-Since"] = lm }).status)
      assert.are.equal(200, get(base, "/site.css", { ["If-Modified-Since"] = "Mon, 01 Jan 2001 00:00:00 GMT" }).status)
      done(srv)
    end)
  end)

  it("serves single byte ranges with 206, and 416 for one it cannot satisfy", function()
    run(function()
      local srv, base = serve(http.static(root .. "/www"))
      local r = get(base, "/big.bin", { Range = "bytes=10-19" })
      assert.are.same({ 206, big:sub(11, 20), "bytes 10-19/300000", "10" },
        { r.status, r.body, r.headers["content-range"], r.headers["content-length"] })
      r = get(base, "/big.bin", { Range = "bytes=-5" })
      assert.are.same({ 206, big:sub(-5) }, { r.status, r.body })
      r = get(base, "/big.bin", { Range = "bytes=299990-" })
      assert.are.same({ 206, big:sub(299991) }, { r.status, r.body })
      r = get(base, "/big.bin", { Range = "bytes=300000-" })
      assert.are.same({ 416, "bytes */300000" }, { r.status, r.headers["content-range"] })
      r = get(base, "/big.bin", { Range = "bytes=0-1,5-6" }) -- several ranges: the whole file
      assert.are.same({ 200, #big }, { r.status, #r.body })
      r = get(base, "/big.bin", { Range = "bytes=0-1", ["If-Range"] = '"stale"' })
      assert.are.same({ 200, #big }, { r.status, #r.body })
      done(srv)
    end)
  end)

  it("never leaves the directory: .., encoded dots and slashes, backslashes, links out", function()
    run(function()
      local srv = serve(http.static(root .. "/www"))
      local _, port = srv:address()
      for _, target in ipairs({ "/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt",
        "/sub%2f..%2f..%2fsecret.txt", "/..%5csecret.txt", "/leak.txt", "/up/secret.txt", "/site.css%00.png" }) do
        local out = raw(port, target)
        assert.matches("^HTTP/1%.1 40[04]", out, nil, target)
        assert.is_nil(out:find("top secret", 1, true), target)
      end
      assert.matches("^HTTP/1%.1 200", raw(port, "/sub/index.html"))
      done(srv)
    end)
  end)

  it("sends the same bytes over TLS, where they are copied instead of sent from the page cache", function()
    run(function()
      local C = helper.certs()
      local srv = assert(http.serve("127.0.0.1", 0, http.static(root .. "/www"),
        { tls = { cert = C .. "server.pem", key = C .. "server.key" } }))
      local _, port = srv:address()
      local r = assert(http.get(("https://localhost:%d/big.bin"):format(port), { tls = { ca = C .. "ca.pem" } }))
      assert.is_true(r.status == 200 and r.body == big, "every byte over TLS")
      r = assert(http.get(("https://localhost:%d/big.bin"):format(port),
        { tls = { ca = C .. "ca.pem" }, headers = { Range = "bytes=1000-1999" } }))
      assert.is_true(r.status == 206 and r.body == big:sub(1001, 2000))
      done(srv)
    end)
  end)

  it("keeps a resolved file for `cache` seconds; cache = 0 sees every change at once", function()
    run(function()
      put("www/live.txt", "one")
      local cached, base = serve(http.static(root .. "/www", { cache = 30 }))
      local srv0, base0 = serve(http.static(root .. "/www", { cache = 0 }))
      assert.are.equal("one", get(base, "/live.txt").body)
      assert.are.equal("one", get(base0, "/live.txt").body)
      os.remove(root .. "/www/live.txt")
      put("www/live.txt", "two!")
      assert.are.equal("two!", get(base0, "/live.txt").body)
      assert.are.equal("one", get(base, "/live.txt").body) -- the open file it kept
      done(cached)
      done(srv0)
    end)
  end)

  it("serves as a route under a wildcard", function()
    run(function()
      local app = http.router()
      app:get("/assets/*path", http.static(root .. "/www", { max_age = 60 }))
      local srv, base = serve(app)
      local r = get(base, "/assets/sub/index.html")
      assert.are.same({ 200, "sub home", "public, max-age=60" }, { r.status, r.body, r.headers["cache-control"] })
      assert.are.equal(404, get(base, "/assets/nope").status)
      done(srv)
    end)
  end)
end)
