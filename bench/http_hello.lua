-- loom's HTTP hello-world server, for bench/http.sh.
-- usage: lua5.4 bench/http_hello.lua PORT
local loom = require "loom"
local port = tonumber(arg[1]) or 26000
local headers = { ["Content-Type"] = "text/plain" }
loom.run(function()
  -- declared with one parameter: no res table is made (see loom.http.serve)
  assert(loom.http.serve("127.0.0.1", port, function(_req)
    return 200, headers, "Hello, World!"
  end, { backlog = 1024 }))
  loom.sleep(1e9)
end)
