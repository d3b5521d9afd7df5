-- The same LuaSocket script, run on real LuaSocket (blocking) or on
-- loom.socket inside a task; spec/socket_spec.lua compares the outputs.
-- usage: lua5.4 socket_parity.lua luasocket|loom PORT
local mode, port = arg[1], tonumber(arg[2])

local function show(...)
  local t = table.pack(...)
  for i = 1, t.n do
    local v = t[i]
    t[i] = type(v) == "string" and ("%q"):format(v) or tostring(v)
  end
  print(table.concat(t, " ", 1, t.n))
end

local function script(socket)
  local function open(case)
    local c = assert(socket.connect("127.0.0.1", port))
    assert(c:send(case .. "\n"))
    return c
  end

  local c = open("lines")
  show("lines", c:receive())
  show("lines", c:receive("*l"))
  show("lines", c:receive("*l"))
  show("lines", c:receive("*l"))
  c:close()

  c = open("count")
  show("count", c:receive(4))
  show("count", c:receive(3, "pre"))
  show("count", c:receive(5))
  local received, sent = c:getstats()
  show("count stats", received, sent)
  show("count zero", c:receive(0))
  show("bad pattern", pcall(c.receive, c, {}) == false)
  c:close()
  show("after close", c:receive())
  show("after close", c:receive(2))
  show("after close", c:send("x"))

  c = open("all")
  local all = c:receive("*a")
  show("all", #all, all:sub(1, 3))
  show("all again", c:receive("*a"))
  c:close()

  c = open("stall")
  c:settimeout(0.2)
  show("stall", c:receive())
  show("stall", c:receive(3))
  c:settimeout(nil)
  show("stall end", c:receive("*a"))
  c:close()

  c = open("echo")
  show("send", c:send("hello world", 7))
  show("send", c:send("abc", 2, 2))
  show("send", c:send("xyz", 5))
  show("echo", c:receive(6))
  c:shutdown("receive")
  show("shut", c:receive())
  local ip, _, family = c:getpeername()
  show("peer", ip, family)
  ip, _, family = c:getsockname()
  show("sock", ip, family)
  show("dirty", c:dirty())
  c:close()

  local s = socket.tcp()
  show("refused", s:connect("127.0.0.1", 1))
  s:close()
  show("host", socket.connect("nonexistent.invalid", 80))

  local srv = assert(socket.bind("127.0.0.1", 0))
  ip, _, family = srv:getsockname()
  show("bound", ip, family)
  srv:settimeout(0.1)
  show("accept", srv:accept())
  srv:close()

  local try = socket.newtry(function() show("finalized") end)
  show("protect", socket.protect(function() try(nil, "boom") end)())
  show("skip", socket.skip(1, "a", "b", "c"))
  show("time", type(socket.gettime()), socket.gettime() > 1.7e9)
end

if mode == "luasocket" then
  script(require "socket")
else
  local loom = require "loom"
  loom.run(function() script(require "loom.socket") end)
end
