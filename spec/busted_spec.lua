-- loom.busted and the virtual clock.
local loom = require "loom"
local helper = require "helper"
local async = require "loom.busted"

describe("loom.busted", function()
  it("reports each kind of failure with a clear message", function()
    local out = helper.lua(nil, {
      file = "/usr/bin/busted --helper=spec/helper.lua --pattern=failing -o TAP spec/peers/busted/failing.lua" })
    assert.matches("not ok 1 %- loom.busted catches a raised error", out)
    assert.matches("boom from the body", out)
    assert.matches("not ok 2 %- loom.busted catches a hang", out)
    assert.matches("test timed out after 0.3 s %(wall time%); the tasks then:", out)
    assert.matches("stuck acceptor %[waiting%] in accept at spec/peers/busted/failing.lua:14", out)
    assert.matches("main %[waiting%] in await at spec/peers/busted/failing.lua:16", out)
    assert.matches("not ok 3 %- loom.busted catches an unretrieved task error", out)
    assert.matches("nobody retrieved its error: spec/peers/busted/failing.lua:20: nobody looks at me", out)
    assert.matches("not ok 4 %- loom.busted catches a handle left open", out)
    assert.matches("1 loom handle%(s%) left open", out)
    assert.matches("\nok 5 %- loom.busted catches passes a good test", out)
    assert.matches("\nok 6 %- loom.busted catches runs an hour of virtual time at once", out)
    assert.matches("not ok 7 %- loom.busted catches times out a hang under the virtual clock too", out)
  end)

  it("checks its arguments", function()
    assert.has_error(function() async(5) end, "bad argument #1 to 'async' (function expected, got number)")
    assert.has_error(function() async(print, { timeout = 0 }) end,
      "bad argument #2 to 'async' (timeout must be a positive number)")
    assert.has_error(function() async(print, { clock = "fast" }) end,
      "bad argument #2 to 'async' (clock must be \"virtual\" or \"real\")")
  end)
end)

describe("the virtual clock", function()
  it("starts at 0 and jumps to the next deadline: an hour's sleep returns at once", async(function()
    assert.are.equal(0, loom.now())
    local t0 = os.clock()
    loom.sleep(3600)
    assert.are.equal(3600, loom.now())
    assert.is_true(os.clock() - t0 < 0.5)
  end, { clock = "virtual" }))

  it("fires a timeout around a stalled TCP read at virtual 30 s, while I/O still wakes tasks", async(function()
    local srv <close> = assert(loom.tcp.listen("127.0.0.1", 0))
    local c <close> = assert(loom.tcp.connect("127.0.0.1", select(2, srv:address())))
    local a <close> = assert(srv:accept())
    local t0 = loom.now()
    assert.are.same({ false, "timeout" }, { loom.timeout(30, a.read, a) })
    assert.are.equal(30, loom.now() - t0)
    -- a peer that answers at once is heard before time moves
    local echo <close> = assert(loom.tcp.serve("127.0.0.1", 0, function(s) s:write(s:read()) end))
    local e <close> = assert(loom.tcp.connect("127.0.0.1", select(2, echo:address())))
    e:set_timeout(10)
    t0 = loom.now()
    assert(e:write("ping"))
    assert.are.equal("ping", e:read())
    assert.are.equal(t0, loom.now())
    -- a stream's own read timeout is on the same clock
    a:set_timeout(5)
    assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { a:read() })
    assert.are.equal(t0 + 5, loom.now())
  end, { clock = "virtual" }))

  it("keeps the order of many sleepers as the real clock does", function()
    local function order(clock)
      local got = {}
      async.run(function()
        local g <close> = loom.group()
        for i = 1, 50 do
          g:spawn(function()
            loom.sleep(((i * 37) % 50) / 1000)
            got[#got + 1] = i
          end)
        end
      end, { clock = clock })
      return table.concat(got, ",")
    end
    assert.are.equal(order("real"), order("virtual"))
  end)

  it("waits for thread work and files before time moves", async(function()
    local t0 = loom.now()
    assert.are.equal(55, loom.thread.run(function()
      local s = 0
      for i = 1, 10 do s = s + i end
      os.execute("sleep 0.05")
      return s
    end))
    assert(loom.fs.read_file("spec/busted_spec.lua"))
    assert.are.equal(t0, loom.now())
  end, { clock = "virtual" }))
end)
