-- loom's HTTP hello-world server in N worker processes, for bench/workers.sh.
-- usage: lua5.4 bench/workers_hello.lua PORT N
local loom = require "loom"
local port, n = tonumber(arg[1]), tonumber(arg[2]) or 2
local headers = { ["Content-Type"] = "text/plain" }
loom.run(function()
  assert(loom.http.serve("127.0.0.1", port, function(_req)
    return 200, headers, "Hello, World!"
  end, { backlog = 1024, workers = n }))
end)
