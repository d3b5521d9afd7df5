-- Tests that fail each way loom.busted catches (spec/busted_spec.lua runs
-- busted on this file in a child process and reads its report).
local loom = require "loom"
local async = require "loom.busted"

describe("loom.busted catches", function()
  it("a raised error", async(function()
    loom.sleep(0.01)
    error("boom from the body")
  end))

  it("a hang", async(function()
    local srv <close> = assert(loom.tcp.listen("127.0.0.1", 0))
    local t = loom.spawn(function() return srv:accept() end) -- nobody connects
    t.name = "stuck acceptor"
    t:await()
  end, { timeout = 0.3 }))

  it("an unretrieved task error", async(function()
    local t = loom.spawn(function() error("nobody looks at me") end)
    loom.sleep(0.01)
    t = nil
    collectgarbage()
    collectgarbage()
  end))

  it("a handle left open", async(function()
    local srv = loom.tcp.listen("127.0.0.1", 0)
    assert(srv)
  end))

  it("passes a good test", async(function()
    loom.sleep(0.01)
    assert.are.equal(2, 1 + 1)
  end))

  it("runs an hour of virtual time at once", async(function()
    loom.sleep(3600)
    assert.are.equal(3600, loom.now())
  end, { clock = "virtual", timeout = 2 }))

  it("times out a hang under the virtual clock too", async(function()
    local srv <close> = assert(loom.tcp.listen("127.0.0.1", 0))
    srv:accept() -- nobody comes: only I/O could wake it
  end, { clock = "virtual", timeout = 0.3 }))
end)
