-- loom's HTTP client: N GETs of a small response with C in flight, for
-- bench/http_client.sh and bench/https.sh (BENCH_CA: the CA that signed an
-- https server's certificate). Prints the requests per second.
-- usage: lua5.4 bench/http_client.lua URL [N] [C]
local loom = require "loom"
local url, n, c = arg[1], tonumber(arg[2]) or 10000, tonumber(arg[3]) or 50
local opts = os.getenv("BENCH_CA") and { tls = { ca = os.getenv("BENCH_CA") } } or nil
loom.run(function()
  local left = n
  local t0 = loom.now()
  do
    local g <close> = loom.group() -- leaving the block waits for the workers
    for _ = 1, c do
      g:spawn(function()
        while left > 0 do
          left = left - 1
          local res = assert(loom.http.get(url, opts))
          assert(res.status == 200 and #res.body > 0)
        end
      end)
    end
  end
  print(("rps=%.0f"):format(n / (loom.now() - t0)))
  loom.http.close_idle()
end)
