-- HTTPS both ways: a loom.http server with TLS and loom.http clients that
-- verify it. The certificates are made for the occasion by
-- tools/mkcerts.sh (a test CA and a certificate for localhost); against a
-- real site, loom.http.get("https://...") verifies with the system's CA
-- store and needs no `tls` option at all.
-- Run: lua5.4 examples/https.lua (from the repository, with loom installed)
local loom = require "loom"

loom.run(function()
  local dir = loom.fs.mkdtemp("/tmp/loom-https-XXXXXX")
  local _, code = loom.process.run { "bash", "tools/mkcerts.sh", dir }
  assert(code == 0, "tools/mkcerts.sh failed")

  local server = assert(loom.http.serve("127.0.0.1", 0, function(req)
    return 200, { ["Content-Type"] = "text/plain" }, "hello over TLS, " .. req.path .. "\n"
  end, { tls = { cert = dir .. "/server.pem", key = dir .. "/server.key" } }))
  local _, port = server:address()

  -- three requests at once over one verified TLS client context
  local trust = { ca = dir .. "/ca.pem" }
  io.write(loom.gather(
    function() return assert(loom.http.get(("https://localhost:%d/a"):format(port), { tls = trust })).body end,
    function() return assert(loom.http.get(("https://localhost:%d/b"):format(port), { tls = trust })).body end,
    function() return assert(loom.http.get(("https://localhost:%d/c"):format(port), { tls = trust })).body end))

  -- the same server, unverified by a client that trusts only the system store
  local _, err, ecode = loom.http.get(("https://localhost:%d/"):format(port))
  print("without the test CA:", ecode, err)

  -- a raw TLS stream, and what was agreed
  local s <close> = assert(loom.tls.connect("localhost", port, trust))
  local info = s:tls_info()
  print(("%s %s, certificate %s issued by %s"):format(info.version, info.cipher, info.peer.subject, info.peer.issuer))

  loom.http.close_idle()
  server:close()
  os.execute("rm -rf " .. dir)
end)
