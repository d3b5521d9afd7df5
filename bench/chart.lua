-- Draws the ratios of one `make bench` output (bench/all.sh) as an SVG bar
-- chart on stdout: for every benchmark and peer, how loom compares (above 1:
-- loom is ahead), on a log scale; with `md`, prints the figures as the
-- README's markdown tables instead (medians over the rounds).
-- usage: lua5.4 bench/chart.lua results.txt [md]
local file = assert(arg[1], "usage: chart.lua results.txt [md]")

local function median(t)
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

-- appends v to the list t[k]
local function push(t, k, v)
  t[k] = t[k] or {}
  table.insert(t[k], v)
end

-- push, one level down: t[k1][k2] gets v
local function push2(t, k1, k2, v)
  t[k1] = t[k1] or {}
  push(t[k1], k2, v)
end

local groups, order = {}, {}
local function add(group, peer, ratio)
  if not ratio or ratio ~= ratio or ratio <= 0 then return end
  if not groups[group] then groups[group] = { peers = {}, list = {} }; order[#order + 1] = group end
  local g = groups[group]
  if not g.peers[peer] then g.peers[peer] = {}; g.list[#g.list + 1] = peer end
  table.insert(g.peers[peer], ratio)
end

local section, bench, title
local echo, http, https, ws, sched, client = {}, {}, {}, {}, {}, { loom = {}, aiohttp = {} }
local pgres, redis, wk, web, tlsr = {}, {}, {}, {}, { echo = {}, cpu = {}, hs = {} }
for line in io.lines(file) do
  local s = line:match("^## (.+)$")
  if s then section = s end
  title = title or line:match("^# (make bench on commit [^,%s]+)")
  if section == "scheduler" then
    bench = line:match("^(%a+) %(median of") or bench
    local rt, secs, us, mb, ratio = line:match("^  (%S+)%s+([%d.]+)%s+([%d.]+)%s+(%d+)%s+([%d.]+)%s+[%d.]+$")
    if rt and rt ~= "loom" then add(bench, rt, tonumber(ratio)) end
    if rt then
      sched[bench] = sched[bench] or { order = {} }
      sched[bench][rt] = { secs = tonumber(secs), us = tonumber(us), mb = tonumber(mb), ratio = tonumber(ratio) }
      table.insert(sched[bench].order, rt)
    end
  elseif section == "echo" then
    local size, name, rps = line:match("^size%s+(%d+)%s+(%S+)%s+(%d+) rps")
    if size then
      push2(echo, size, name, tonumber(rps))
    end
  elseif section == "http server" then
    local name, rps = line:match("^(%S+)%s+(%d+) req/s")
    if name then
      push(http, name, tonumber(rps))
    end
  elseif section == "http client" then
    add("http client", "aiohttp", tonumber(line:match("loom/aiohttp ([%d.]+)")))
    local l, a = line:match("loom%s+(%d+) req/s%s+aiohttp%s+(%d+) req/s")
    if l then table.insert(client.loom, tonumber(l)); table.insert(client.aiohttp, tonumber(a)) end
  elseif section == "websocket" then
    local size, name, mps = line:match("^ws size%s+(%d+)%s+(%S+)%s+(%d+) msgs/s")
    if size then
      push2(ws, size, name, tonumber(mps))
    end
  elseif section == "postgresql" then
    local mode, name, v = line:match("^pg (%S+)%s+(%S+)%s+(%d+) ")
    if mode then
      push2(pgres, mode, name, tonumber(v))
    end
  elseif section == "redis" then
    local mode, v = line:match("^redis (%S+)%s+(%d+) ops/s")
    if mode then
      push(redis, mode, tonumber(v))
    end
  elseif section == "web" then
    local name, rps = line:match("^web (json%-%S+)%s+(%d+) req/s")
    if name then
      push(web, name, tonumber(rps))
    end
    local ofhello = line:match("^web json%-loom%s+%d+ req/s%s+of loom hello ([%d.]+)")
    if ofhello then web.ofhello = web.ofhello or {}; table.insert(web.ofhello, tonumber(ofhello)) end
    local size, l, n = line:match("^web static%-(%w+) loom%s+(%d+) req/s%s+nginx%s+(%d+) req/s")
    if size then
      web["static-" .. size] = web["static-" .. size] or { loom = {}, nginx = {} }
      table.insert(web["static-" .. size].loom, tonumber(l))
      table.insert(web["static-" .. size].nginx, tonumber(n))
    end
  elseif section == "workers" then
    local name, rps = line:match("^(%S+)%s+(%d+) req/s")
    if name then
      push(wk, name, tonumber(rps))
    end
  elseif section == "tls" then
    local name, rps, cpu = line:match("^tls echo16k (%S+)%s+(%d+) rps.-cpu%s+([%d.]+) us/trip")
    if name then
      push(tlsr.echo, name, tonumber(rps))
      push(tlsr.cpu, name, tonumber(cpu))
    end
    local hname, proto, full, resumed = line:match("^tls handshake (%S+) tls(%S+)%s+new%s+(%d+) us%s+reuse%s+(%d+) us")
    if hname then
      local key = hname .. " " .. proto
      tlsr.hs[key] = tlsr.hs[key] or { new = {}, reuse = {} }
      table.insert(tlsr.hs[key].new, tonumber(full))
      table.insert(tlsr.hs[key].reuse, tonumber(resumed))
    end
  elseif section == "https" then
    local mode, name, rps = line:match("^https (%S+)%s+(%S+)%s+(%d+) req/s")
    local cl, ca = line:match("^https client%s+loom%s+(%d+) req/s%s+aiohttp%s+(%d+) req/s")
    if cl then
      https.client = https.client or { loom = {}, aiohttp = {} }
      table.insert(https.client.loom, tonumber(cl))
      table.insert(https.client.aiohttp, tonumber(ca))
    elseif mode then
      push2(https, mode, name, tonumber(rps))
    end
  end
end
for _, size in ipairs({ "64", "1024", "16384" }) do
  local e = echo[size]
  if e and e.loom then
    local l = median(e.loom)
    for _, peer in ipairs({ "C-libuv", "luv", "cqueues", "uvloop", "node" }) do
      if e[peer] then add("echo " .. size .. " B", peer, l / median(e[peer])) end
    end
  end
end
if http.loom then
  for _, peer in ipairs({ "nginx", "node", "aiohttp", "lua-http" }) do
    if http[peer] then add("http server", peer, median(http.loom) / median(http[peer])) end
  end
end

for _, mode in ipairs({ "keepalive", "newconn" }) do
  local h = https[mode]
  if h and h.loom and h.nginx then add("https " .. mode, "nginx", median(h.loom) / median(h.nginx)) end
end
if https.client then
  add("https client", "aiohttp", median(https.client.loom) / median(https.client.aiohttp))
end
if tlsr.echo.loom and tlsr.echo.C then
  add("tls echo 16 KiB", "C libuv+OpenSSL", median(tlsr.echo.loom) / median(tlsr.echo.C))
end

for _, size in ipairs({ "64", "16384" }) do
  local w = ws[size]
  if w and w.loom then
    for _, peer in ipairs({ "node-ws", "websockets" }) do
      if w[peer] then add("websocket echo " .. size .. " B", peer, median(w.loom) / median(w[peer])) end
    end
  end
end

local PG_MODES = { { "select", "select by id (queries/s)" }, { "wait", "select, 1 ms wait (queries/s)" },
  { "insert", "10,000-row insert (rows/s)" } }
for _, m in ipairs(PG_MODES) do
  local r = pgres[m[1]]
  if r and r.loom then
    for _, peer in ipairs({ "asyncpg", "blocking" }) do
      if r[peer] then add("postgresql " .. m[1], peer, median(r.loom) / median(r[peer])) end
    end
  end
end

if redis.socket then
  for _, peer in ipairs({ "streams", "luasocket" }) do
    if redis[peer] then add("redis-lua on loom.socket", peer, median(redis.socket) / median(redis[peer])) end
  end
end

if web["json-loom"] then
  local l = median(web["json-loom"])
  for _, peer in ipairs({ "aiohttp", "fastify" }) do
    local r = web["json-" .. peer]
    if r then add("router + JSON", peer == "aiohttp" and "aiohttp.web" or peer, l / median(r)) end
  end
end
for _, size in ipairs({ "4k", "1m" }) do
  local r = web["static-" .. size]
  if r then add("static " .. size, "nginx", median(r.loom) / median(r.nginx)) end
end

if wk["loom-2"] then
  for _, peer in ipairs({ "nginx-2", "loom-1" }) do
    if wk[peer] then add("http, 2 workers", peer, median(wk["loom-2"]) / median(wk[peer])) end
  end
end

if arg[2] == "md" then
  local function fmt(n) return tostring(math.floor(n + 0.5)):reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "") end
  local function row(cells) print("| " .. table.concat(cells, " | ") .. " |") end
  print("Scheduler (us per operation; sleepers: wall seconds; peer / loom in brackets, above 1: loom ahead):\n")
  row({ "benchmark", "loom", "Node", "cqueues", "uvloop", "asyncio" })
  row({ "---", "---", "---", "---", "---", "---" })
  for _, b in ipairs({ "spawn", "pingpong", "semaphore", "gather", "timeout", "sleepers" }) do
    local r = sched[b]
    if r then
      local key = b == "sleepers" and "secs" or "us"
      local cells = { b, ("**%.2f**"):format(r.loom[key]) }
      for _, rt in ipairs({ "node", "cqueues", "uvloop", "asyncio" }) do
        cells[#cells + 1] = r[rt] and ("%.2f (%.2f)"):format(r[rt][key], r[rt][key] / r.loom[key]) or ""
      end
      row(cells)
    end
  end
  print("\nTCP echo, requests/s (medians; loom / peer in brackets):\n")
  row({ "server", "64 B", "1 KiB", "16 KiB" })
  row({ "---", "---", "---", "---" })
  for _, name in ipairs({ "C-libuv", "loom", "luv", "cqueues", "uvloop", "node" }) do
    local cells = { name }
    for _, size in ipairs({ "64", "1024", "16384" }) do
      local e = echo[size] or {}
      local v, l = e[name] and median(e[name]), e.loom and median(e.loom)
      cells[#cells + 1] = v and (name == "loom" and ("**%s**"):format(fmt(v)) or ("%s (%.2f)"):format(fmt(v), l / v)) or ""
    end
    row(cells)
  end
  print("\nHTTP hello world, requests/s (medians; loom / peer):\n")
  row({ "server", "req/s", "loom / it" })
  row({ "---", "---", "---" })
  for _, name in ipairs({ "nginx", "loom", "node", "aiohttp", "lua-http" }) do
    if http[name] then row({ name, fmt(median(http[name])), ("%.2f"):format(median(http.loom) / median(http[name])) }) end
  end
  if #client.loom > 0 then
    print(("\nHTTP client, 10,000 GETs from nginx, 50 in flight: loom %s req/s, aiohttp %s req/s (%.2fx)")
      :format(fmt(median(client.loom)), fmt(median(client.aiohttp)), median(client.loom) / median(client.aiohttp)))
  end
  print("\nHTTPS against nginx with TLS, requests/s (medians):\n")
  row({ "load", "nginx", "loom", "loom / nginx" })
  row({ "---", "---", "---", "---" })
  for _, mode in ipairs({ "keepalive", "newconn" }) do
    local h = https[mode]
    if h and h.loom and h.nginx then
      row({ mode, fmt(median(h.nginx)), fmt(median(h.loom)), ("%.2f"):format(median(h.loom) / median(h.nginx)) })
    end
  end
  if https.client then
    local l, a = median(https.client.loom), median(https.client.aiohttp)
    print(("\nHTTPS client, 10,000 GETs from nginx with TLS, 50 in flight: loom %s req/s, aiohttp %s req/s (%.2fx)")
      :format(fmt(l), fmt(a), l / a))
  end
  if tlsr.echo.loom and tlsr.echo.C then
    local l, c = median(tlsr.echo.loom), median(tlsr.echo.C)
    local lc, cc = median(tlsr.cpu.loom), median(tlsr.cpu.C)
    print(("\nTLS echo, 16 KiB, 50 connections: loom %s round trips/s, C libuv + OpenSSL %s (%.2fx); " ..
      "server CPU per round trip %.1f us and %.1f us (C / loom %.2f)"):format(fmt(l), fmt(c), l / c, lc, cc, cc / lc))
  end
  if tlsr.hs["loom 1.3"] then
    print("\nTLS handshakes, server CPU per handshake (us, medians; openssl s_time):\n")
    row({ "server", "protocol", "full", "resumed", "full / resumed" })
    row({ "---", "---", "---", "---", "---" })
    for _, proto in ipairs({ "1.3", "1.2" }) do
      for _, name in ipairs({ "nginx", "loom" }) do
        local h = tlsr.hs[name .. " " .. proto]
        if h then
          local f, r = median(h.new), median(h.reuse)
          row({ name, "TLS " .. proto, fmt(f), fmt(r), ("%.2f"):format(f / r) })
        end
      end
    end
  end
  print("\nWebSocket echo, messages/s (medians):\n")
  row({ "size", "loom", "Node ws", "python websockets", "loom / ws", "loom / websockets" })
  row({ "---", "---", "---", "---", "---", "---" })
  for _, size in ipairs({ "64", "16384" }) do
    local w = ws[size]
    if w and w.loom then
      local l = median(w.loom)
      local n, py = w["node-ws"] and median(w["node-ws"]), w.websockets and median(w.websockets)
      row({ size .. " B", fmt(l), n and fmt(n) or "", py and fmt(py) or "", n and ("%.2f"):format(l / n) or "",
        py and ("%.2f"):format(l / py) or "" })
    end
  end
  print("\nPostgreSQL, 50 tasks over a pool of 10 (the blocking loop: one query after another), medians:\n")
  row({ "work", "loom", "asyncpg", "blocking libpq", "loom / asyncpg", "loom / blocking" })
  row({ "---", "---", "---", "---", "---", "---" })
  for _, m in ipairs(PG_MODES) do
    local r = pgres[m[1]]
    if r and r.loom then
      local l, a, b = median(r.loom), r.asyncpg and median(r.asyncpg), r.blocking and median(r.blocking)
      row({ m[2], fmt(l), a and fmt(a) or "", b and fmt(b) or "", a and ("%.2f"):format(l / a) or "",
        b and ("%.2f"):format(l / b) or "" })
    end
  end
  if web["json-loom"] then
    print("\nWeb: GET /users/:id through loom.http.router returning a small JSON object; static files (medians):\n")
    row({ "server", "req/s", "loom / it" })
    row({ "---", "---", "---" })
    local l = median(web["json-loom"])
    row({ "loom, router + JSON", fmt(l), ("%.2f of loom's hello world"):format(median(web.ofhello or { 0 })) })
    for _, m in ipairs({ { "json-aiohttp", "aiohttp.web on uvloop" }, { "json-fastify", "Node fastify" } }) do
      if web[m[1]] then row({ m[2], fmt(median(web[m[1]])), ("%.2f"):format(l / median(web[m[1]])) }) end
    end
    for _, size in ipairs({ "4k", "1m" }) do
      local r = web["static-" .. size]
      if r then
        local name = size == "4k" and "4 KiB" or "1 MiB"
        row({ "loom.http.static, " .. name, fmt(median(r.loom)), "" })
        row({ "nginx, " .. name, fmt(median(r.nginx)), ("%.2f"):format(median(r.loom) / median(r.nginx)) })
      end
    end
  end
  if wk["loom-2"] then
    print("\nHTTP hello world in worker processes, unpinned, wrk on the same two cores, requests/s (medians):\n")
    row({ "server", "req/s", "loom 2 workers / it" })
    row({ "---", "---", "---" })
    for _, m in ipairs({ { "nginx-2", "nginx, 2 workers" }, { "loom-2", "loom, workers = 2" },
      { "loom-1", "loom, workers = 1" } }) do
      if wk[m[1]] then row({ m[2], fmt(median(wk[m[1]])), ("%.2f"):format(median(wk["loom-2"]) / median(wk[m[1]])) }) end
    end
  end
  if redis.socket then
    print("\nRedis GET/SET, 50 tasks (LuaSocket: one request after another), operations/s (medians):\n")
    row({ "client", "ops/s", "redis-lua on loom.socket / it" })
    row({ "---", "---", "---" })
    local l = median(redis.socket)
    for _, m in ipairs({ { "socket", "redis-lua on loom.socket" }, { "streams", "a RESP client on loom streams" },
      { "luasocket", "redis-lua on LuaSocket" } }) do
      if redis[m[1]] then row({ m[2], fmt(median(redis[m[1]])), ("%.2f"):format(l / median(redis[m[1]])) }) end
    end
  end
  return
end

-- layout: one row per (benchmark, peer), log2 scale from 1/4 to 64
local rows = {}
for _, gname in ipairs(order) do
  local g = groups[gname]
  for _, peer in ipairs(g.list) do rows[#rows + 1] = { group = gname, peer = peer, r = median(g.peers[peer]) } end
end
local W, left, right, top, rowh = 760, 200, 40, 50, 16
local H = top + #rows * rowh + 40
local lo, hi = math.log(1 / 4, 2), math.log(64, 2)
local function x(r)
  local v = math.max(lo, math.min(hi, math.log(r, 2)))
  return left + (v - lo) / (hi - lo) * (W - left - right)
end
local out = {}
local function p(...) out[#out + 1] = string.format(...) end
p('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">', W, H)
p('<rect width="100%%" height="100%%" fill="white"/>')
p('<text x="%d" y="20" font-size="14">loom against its peers (%s): above 1, loom is ahead</text>', left - 180,
  title or "make bench")
for _, r in ipairs({ 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64 }) do
  p('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>', x(r), top - 8, x(r), H - 30, r == 1 and "black" or "#ddd")
  p('<text x="%.1f" y="%d" text-anchor="middle">%g</text>', x(r), H - 16, r)
end
local last
for i, row in ipairs(rows) do
  local y = top + (i - 1) * rowh
  if row.group ~= last then
    p('<text x="4" y="%d" font-weight="bold">%s</text>', y + 11, row.group)
    last = row.group
  end
  p('<text x="%d" y="%d" text-anchor="end">%s</text>', left - 6, y + 11, row.peer)
  local x0, x1 = x(1), x(row.r)
  p('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>', math.min(x0, x1), y + 2,
    math.max(1, math.abs(x1 - x0)), rowh - 4, row.r >= 1 and "#2a7" or "#d54")
  p('<text x="%.1f" y="%d">%.2f</text>', math.max(x0, x1) + 4, y + 11, row.r)
end
p('</svg>')
print(table.concat(out, "\n"))
