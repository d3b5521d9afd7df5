-- A library written for LuaSocket, run concurrently: redis-lua (Debian's
-- lua-redis) is handed loom.socket connections, and 20 worker tasks wait in
-- BLPOP at once, each blocking only itself, while a producer pushes 20 jobs
-- over 50 ms: all are taken in about 50 ms. Uses redis on $REDIS_PORT, or
-- starts a throwaway redis-server.
package.path = package.path .. ";/usr/share/lua/5.3/?.lua" -- where Debian puts redis-lua
local loom = require "loom"
local socket = require "loom.socket"
local redis = require "redis"

local port, server = tonumber(os.getenv("REDIS_PORT")), nil
if not port then
  local p = io.popen([[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])']])
  port = tonumber(p:read("l"))
  p:close()
  p = io.popen(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & echo $!")
    :format(port))
  server = p:read("l")
  p:close()
end

-- a redis-lua client on a loom.socket connection
local function client()
  return redis.connect({ socket = assert(socket.connect("127.0.0.1", port)) })
end

local ok, err = pcall(loom.run, function()
  for _ = 1, 100 do -- wait for the server we started
    local s = socket.connect("127.0.0.1", port)
    if s then s:close() break end
    loom.sleep(0.02)
  end
  local admin = client()
  admin:del("visits", "jobs")

  -- a producer that pushes one job every 50 ms, for the 20 waiting workers
  loom.spawn(function()
    local c = client()
    for i = 1, 20 do
      loom.sleep(0.05 / 20)
      c:rpush("jobs", "job " .. i)
    end
    c:quit()
  end)

  local t0 = loom.now()
  local done = {}
  loom.group(function(g)
    for w = 1, 20 do
      g:spawn(function()
        local c = client()
        local job = c:blpop("jobs", 5)[2] -- blocks this task only
        c:incr("visits")
        done[#done + 1] = job
        c:quit()
      end)
    end
  end)
  print(("20 workers took %d jobs in %.0f ms; visits = %s"):format(#done, (loom.now() - t0) * 1000,
    admin:get("visits")))
  admin:quit()
end)
if server then os.execute("kill " .. server) end -- stopped on an error too
assert(ok, err)
