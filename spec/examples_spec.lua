local helper = require "helper"

describe("examples", function()
  it("fetch.lua runs three fetches concurrently", function()
    local out, code = helper.lua(nil, { file = "examples/fetch.lua", env = "FETCH_DELAY=0.2" })
    assert.are.equal(0, code)
    local starts, dones = 0, 0
    for secs in out:gmatch("(%d+%.%d+)s  start") do
      starts = starts + 1
      assert.is_true(tonumber(secs) < 0.05)
    end
    for secs in out:gmatch("(%d+%.%d+)s  done ") do
      dones = dones + 1
      assert.is_true(tonumber(secs) >= 0.19 and tonumber(secs) < 0.35)
    end
    assert.are.equal(3, starts)
    assert.are.equal(3, dones)
    local total = assert(tonumber(out:match("(%d+%.%d+)s  all 3 fetches done")))
    assert.is_true(total < 0.35, out)
  end)
end)
