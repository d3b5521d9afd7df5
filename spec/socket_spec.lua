-- loom.socket: LuaSocket's API on loom, checked against LuaSocket itself
-- (the same script on both), against redis-lua on a real redis-server, and
-- with LuaSocket's own socket.http against nginx.
local loom = require "loom"
local helper = require "helper"
local run = helper.run
local lsocket = require "loom.socket"

-- The scripted peer of spec/peers/socket_parity.lua: the first line of a
-- connection names the case.
local function parity_peer()
  return assert(loom.tcp.serve("127.0.0.1", 0, function(s)
    local case = s:read_line()
    if case == "lines" then
      s:write("alpha\r\nbeta\ngam\rma\ntail")
    elseif case == "count" then
      s:write("0123456789")
    elseif case == "all" then
      s:write(("x"):rep(100000))
    elseif case == "stall" then
      s:write("partial")
      loom.sleep(0.6)
    elseif case == "echo" then
      while true do
        local data = s:read()
        if not data then break end
        s:write(data)
      end
    end
  end))
end

local function script(mode, port)
  local out, code = loom.process.run { "sh", "-c", ("LUA_PATH='%s' LUA_CPATH='%s' lua5.4 spec/peers/socket_parity.lua %s %d 2>&1")
    :format(package.path, package.cpath, mode, port) }
  return out, code
end

describe("loom.socket", function()
  it("gives what LuaSocket gives, call for call", function()
    run(function()
      local peer = parity_peer()
      local _, port = peer:address()
      local real, c1 = script("luasocket", port)
      local ours, c2 = script("loom", port)
      peer:close()
      assert.are.equal(0, c1, real)
      assert.are.equal(0, c2, ours)
      assert.matches('lines "alpha"', real, 1, true) -- the script ran
      assert.matches('stall nil "timeout" "partial"', real, 1, true)
      assert.are.equal(real, ours)
    end, 15)
  end)

  it("runs many clients concurrently in one loop, each blocking only its task", function()
    run(function()
      local srv = assert(loom.tcp.serve("127.0.0.1", 0, function(s)
        for line in s:lines() do
          loom.sleep(0.05)
          s:write(line:upper(), "\n")
        end
      end))
      local _, port = srv:address()
      local t0 = loom.now()
      local results = {}
      loom.group(function(g)
        for i = 1, 50 do
          g:spawn(function()
            local c = assert(lsocket.connect("127.0.0.1", port))
            for k = 1, 3 do
              assert.are.equal(3 + #tostring(i) + 2, c:send(("m%d-%d\n"):format(i, k)))
              results[#results + 1] = assert(c:receive())
            end
            c:close()
          end)
        end
      end)
      local took = loom.now() - t0
      srv:close()
      assert.are.equal(150, #results)
      assert.is_true(took < helper.upper(0.15, 0.5), took) -- 50 x 3 x 50 ms one after another would be 7.5 s
    end)
  end)

  it("select waits for readable sockets and a server's next connection, losing no byte", function()
    run(function()
      local srv = assert(lsocket.bind("127.0.0.1", 0))
      local _, port = srv:getsockname()
      local client = assert(lsocket.connect("127.0.0.1", port))
      local r, _, err = lsocket.select({ srv }, nil, 1)
      assert.is_nil(err)
      assert.is_true(r[srv])
      local conn = assert(srv:accept())
      r, _, err = lsocket.select({ conn }, nil, 0.05)
      assert.are.same({}, r)
      assert.are.equal("timeout", err)
      loom.spawn(function() loom.sleep(0.05); client:send("ping\n") end)
      local t0 = loom.now()
      r = lsocket.select({ conn, srv }, { client })
      assert.is_true(loom.now() - t0 >= 0.04)
      assert.is_true(r[conn])
      assert.is_true(conn:dirty())
      assert.are.equal("ping", conn:receive())
      for _, s in ipairs { client, conn, srv } do s:close() end
    end)
  end)

  it("speaks UDP: sendto/receivefrom, and connected send/receive", function()
    run(function()
      local a, b = lsocket.udp(), lsocket.udp()
      assert.are.equal(1, a:setsockname("127.0.0.1", 0))
      assert.are.equal(1, b:setsockname("127.0.0.1", 0))
      local _, pa = a:getsockname()
      local _, pb = b:getsockname()
      assert.are.equal(5, a:sendto("hello", "127.0.0.1", pb))
      assert.are.same({ "hello", "127.0.0.1", pa }, { b:receivefrom() })
      assert.are.equal(1, b:setpeername("127.0.0.1", pa))
      assert.are.equal(3, b:send("hey"))
      assert.are.equal("hey", a:receive())
      a:settimeout(0.05)
      assert.are.same({ nil, "timeout" }, { a:receive() })
      a:close()
      b:close()
    end)
  end)

  it("resolves names, and times as LuaSocket does", function()
    run(function()
      local ip, info = lsocket.dns.toip("localhost")
      assert.is_truthy(ip == "127.0.0.1" or ip == "::1")
      assert.are.equal("localhost", info.name)
      assert.are.same({ nil, "host not found" }, { lsocket.dns.toip("nonexistent.invalid") })
      assert.are.equal("string", type(lsocket.dns.gethostname()))
      local t0 = lsocket.gettime()
      lsocket.sleep(0.05)
      assert.is_true(lsocket.gettime() - t0 >= 0.05)
    end)
    -- outside a task: LuaSocket's own blocking socket
    local s = lsocket.tcp()
    assert.matches("^tcp{master}", tostring(s))
    assert.is_nil(getmetatable(s).__index._state)
    s:close()
  end)
end)
