-- Beyond one machine: HAProxy in front of two loom servers (each with its
-- workers), one of them stopped and started again under load, and not one
-- request lost.
--
--   lua5.4 examples/load_balanced.lua
--
-- It starts everything itself on free local ports (needs Debian's haproxy):
-- two `examples/workers.lua PORT` servers, and HAProxy with HTTP health
-- checks on them; then 20 clients send requests through HAProxy while
-- server A is stopped (SIGTERM: it stops accepting and finishes what it
-- has) and started again. The servers share nothing: state belongs in
-- PostgreSQL or Redis.
--
-- The HAProxy settings that make it lossless: a health check every 100 ms
-- takes a stopped server out; `retries` with `option redispatch` send a
-- request whose connection was refused to the other server; `retry-on`
-- also retries a request whose idle kept-alive connection the stopping
-- server closed.
local loom = require "loom"

local scale = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))

local function free_port()
  local probe = assert(loom.tcp.listen("127.0.0.1", 0))
  local _, port = probe:address()
  probe:close()
  return port
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- A loom server with its workers, as a child process: lua5.4 examples/workers.lua PORT
local function start_server(port)
  local p = assert(loom.process.spawn { "sh", "-c",
    ("LUA_PATH=%s LUA_CPATH=%s exec lua5.4 examples/workers.lua %d"):format(shell_quote(package.path),
      shell_quote(package.cpath), port), stdout = "null" })
  return p
end

local function up(port)
  for _ = 1, 250 do
    local s = loom.tcp.connect("127.0.0.1", port)
    if s then s:close() return true end
    loom.sleep(0.02)
  end
  error("nothing listens on " .. port)
end

local HAPROXY = [[
global
  maxconn 1000
defaults
  mode http
  timeout connect 1s
  timeout client 10s
  timeout server 10s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
frontend web
  bind 127.0.0.1:%d
  default_backend loom
backend loom
  balance roundrobin
  option httpchk GET /health
  default-server inter 100ms fall 1 rise 2
  server a 127.0.0.1:%d check
  server b 127.0.0.1:%d check
]]

loom.run(function()
  local front, port_a, port_b = free_port(), free_port(), free_port()
  local a, b = start_server(port_a), start_server(port_b)
  up(port_a)
  up(port_b)
  local cfg = dir .. "/haproxy.cfg"
  local f = assert(io.open(cfg, "w"))
  f:write(HAPROXY:format(front, port_a, port_b))
  f:close()
  local haproxy = assert(loom.process.spawn { "haproxy", "-f", cfg, "-db", stdout = "null", stderr = "null" })
  up(front)
  loom.sleep(0.5) -- both servers seen healthy

  local ok, failed, stop = 0, 0, false
  local clients = {}
  for i = 1, 20 do
    clients[i] = loom.spawn(function()
      while not stop do
        local res = loom.http.get(("http://127.0.0.1:%d/"):format(front), { timeout = 5 })
        if res and res.status == 200 then ok = ok + 1 else failed = failed + 1 end
      end
    end)
  end
  loom.sleep(1 * scale)
  print("stopping server A under load")
  a:kill("SIGTERM")
  print("server A stopped, exit status " .. tostring(a:wait()))
  loom.sleep(1 * scale)
  print("starting server A again")
  a = start_server(port_a)
  up(port_a)
  loom.sleep(1 * scale + 0.5) -- seen healthy again, and serving
  stop = true
  for _, c in ipairs(clients) do c:await() end
  print(("%d requests through HAProxy, %d failed"):format(ok, failed))

  loom.http.close_idle()
  haproxy:kill("SIGTERM")
  haproxy:wait()
  a:kill("SIGTERM")
  b:kill("SIGTERM")
  print("servers stopped, exit statuses " .. tostring(a:wait()) .. " " .. tostring(b:wait()))
  os.execute("rm -rf " .. dir)
end)
