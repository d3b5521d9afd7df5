-- loom's HTTPS hello-world server, for bench/https.sh.
-- usage: lua5.4 bench/https_hello.lua PORT CERT KEY
local loom = require "loom"
local port, cert, key = tonumber(arg[1]), arg[2], arg[3]
local headers = { ["Content-Type"] = "text/plain" }
loom.run(function()
  assert(loom.http.serve("127.0.0.1", port, function(_req)
    return 200, headers, "Hello, World!"
  end, { backlog = 1024, tls = { cert = cert, key = key } }))
  loom.sleep(1e9)
end)
