-- Redis GET/SET load for bench/redis.sh: usage redis_load.lua MODE PORT SECS
--   socket:    redis-lua (Debian's lua-redis) over loom.socket, 50 tasks
--   streams:   a small RESP client on loom's streams, 50 tasks
--   luasocket: redis-lua on real LuaSocket, one request after another
-- Each task (or the one loop) alternates SET key value / GET key; prints
-- ops_per_s.
local mode, port, secs = arg[1], tonumber(arg[2]), tonumber(arg[3])
package.path = package.path .. ";/usr/share/lua/5.3/?.lua" -- where Debian puts redis-lua
local TASKS = 50

if mode == "luasocket" then
  local redis = require "redis"
  local socket = require "socket"
  local c = redis.connect("127.0.0.1", port)
  local n, t0 = 0, socket.gettime()
  while socket.gettime() - t0 < secs do
    c:set("k" .. n % 100, "value")
    assert(c:get("k" .. n % 100) == "value")
    n = n + 2
  end
  print(("ops_per_s=%d"):format(math.floor(n / (socket.gettime() - t0))))
  return
end

local loom = require "loom"

-- The RESP client written on loom's streams.
local function resp(port_)
  local s = assert(loom.tcp.connect("127.0.0.1", port_))
  local function command(...)
    local parts = { "*" .. select("#", ...) .. "\r\n" }
    for i = 1, select("#", ...) do
      local a = tostring((select(i, ...)))
      parts[#parts + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
    end
    assert(s:write(parts))
    local line = assert(s:read_line())
    local kind = line:sub(1, 1)
    if kind == "$" then
      local len = tonumber(line:sub(2))
      if len < 0 then return nil end
      local data = assert(s:read_exactly(len + 2))
      return data:sub(1, len)
    elseif kind == "-" then
      error(line:sub(2))
    end
    return line:sub(2)
  end
  return command, s
end

loom.run(function()
  local count, stop = 0, false
  local tasks = {}
  for w = 1, TASKS do
    tasks[w] = loom.spawn(function()
      local set, get, close
      if mode == "socket" then
        local redis = require "redis"
        local sock = assert(require("loom.socket").connect("127.0.0.1", port))
        local c = redis.connect({ socket = sock })
        set, get, close = function(k, v) return c:set(k, v) end, function(k) return c:get(k) end,
          function() sock:close() end
      else
        local command, s = resp(port)
        set, get, close = function(k, v) return command("SET", k, v) end, function(k) return command("GET", k) end,
          function() s:close() end
      end
      local i = 0
      while not stop do
        local key = ("k%d:%d"):format(w, i % 10)
        set(key, "value")
        assert(get(key) == "value")
        count = count + 2
        i = i + 1
      end
      close()
    end)
  end
  loom.sleep(0.5)
  local c0, t0 = count, loom.now()
  loom.sleep(secs)
  local c1, t1 = count, loom.now()
  stop = true
  for _, t in ipairs(tasks) do t:await() end
  print(("ops_per_s=%d"):format(math.floor((c1 - c0) / (t1 - t0))))
end)
