local loom = require "loom"
local helper = require "helper"
local run = helper.run

local function drain(q)
  local out = {}
  while not q:empty() do out[#out + 1] = q:get_nowait() end
  return out
end

describe("loom.queue", function()
  it("keeps FIFO, LIFO and priority order", function()
    local fifo, lifo, prio = loom.queue(), loom.queue(0, { order = "lifo" }), loom.queue({ order = "priority" })
    for _, v in ipairs({ 3, 1, 2, 5, 4 }) do
      fifo:put_nowait(v); lifo:put_nowait(v); prio:put_nowait(v)
    end
    assert.are.same({ 3, 1, 2, 5, 4 }, drain(fifo))
    assert.are.same({ 4, 5, 2, 1, 3 }, drain(lifo))
    assert.are.same({ 1, 2, 3, 4, 5 }, drain(prio))
    local by = loom.queue(0, { order = "priority", less = function(a, b) return a.p > b.p end })
    for _, p in ipairs({ 2, 9, 4 }) do by:put_nowait({ p = p }) end
    assert.are.same({ 9, 4, 2 }, { by:get_nowait().p, by:get_nowait().p, by:get_nowait().p })
  end)

  it("grows a FIFO ring while keeping order across the wrap", function()
    local q = loom.queue()
    local expect = {}
    for i = 1, 5 do q:put_nowait(i) end
    for _ = 1, 3 do q:get_nowait() end
    for i = 6, 40 do q:put_nowait(i) end
    for i = 4, 40 do expect[#expect + 1] = i end
    assert.are.same(expect, drain(q))
  end)

  it("sorts many priority items", function()
    local q = loom.queue({ order = "priority" })
    local vals = {}
    math.randomseed(7)
    for i = 1, 500 do vals[i] = math.random(1000); q:put_nowait(vals[i]) end
    table.sort(vals)
    assert.are.same(vals, drain(q))
  end)

  it("blocks putters while full and getters while empty, serving both in arrival order", function()
    local log = {}
    run(function()
      local q = loom.queue(2)
      local putters = {}
      for i = 1, 4 do putters[i] = loom.spawn(function() q:put(i); log[#log + 1] = "put" .. i end) end
      loom.sleep(0)
      assert.are.same({ "put1", "put2" }, log)
      assert.is_true(q:full())
      assert.are.equal(2, q:size())
      for i = 1, 4 do assert.are.equal(i, q:get()) end
      for i = 1, 4 do putters[i]:await() end
      local getters = {}
      for i = 1, 3 do getters[i] = loom.spawn(function() return i, q:get() end) end
      loom.sleep(0)
      for _, v in ipairs({ "a", "b", "c" }) do q:put(v) end
      for i = 1, 3 do assert.are.same({ i, ({ "a", "b", "c" })[i] }, { getters[i]:await() }) end
    end)
  end)

  it("does not let a new putter barge ahead of a woken one", function()
    run(function()
      local q = loom.queue(1)
      q:put("first")
      local waiting = loom.spawn(function() return q:put("second") end)
      loom.sleep(0)
      assert.are.equal("first", q:get()) -- reserves the slot for `waiting`
      assert.are.same({ nil, "full" }, { q:put_nowait("barger") })
      waiting:await()
      assert.are.equal("second", q:get())
    end)
  end)

  it("a getter cancelled after an item was handed to it puts the item back first", function()
    run(function()
      local q = loom.queue()
      local g = loom.spawn(function() return q:get() end)
      loom.sleep(0)
      q:put("x")       -- handed straight to g
      q:put("y")
      g:cancel()       -- before g ran: "x" goes back in front
      assert.has_error(function() g:await() end)
      assert.are.same({ "x", "y" }, drain(q))
      -- handed on to the next getter when there is one
      local g1 = loom.spawn(function() return q:get() end)
      local g2 = loom.spawn(function() return q:get() end)
      loom.sleep(0)
      q:put("z")
      g1:cancel()
      assert.are.equal("z", g2:await())
      -- priority order survives the give-back
      local p = loom.queue({ order = "priority" })
      local pg = loom.spawn(function() return p:get() end)
      loom.sleep(0)
      p:put(5)
      p:put(3)
      pg:cancel()
      assert.are.same({ 3, 5 }, drain(p))
    end)
  end)

  it("a cancelled put on a full queue leaves it unchanged, waiting or woken", function()
    run(function()
      local q = loom.queue(1)
      q:put("a")
      local p = loom.spawn(function() return q:put("b") end)
      loom.sleep(0)
      p:cancel()
      assert.has_error(function() p:await() end)
      assert.are.same({ "a" }, drain(q))
      q:put("a")
      local p1 = loom.spawn(function() return q:put("b") end)
      local p2 = loom.spawn(function() return q:put("c") end)
      loom.sleep(0)
      assert.are.equal("a", q:get()) -- slot promised to p1
      p1:cancel()                     -- p1 never inserted: the slot goes to p2
      pcall(p1.await, p1)
      assert.is_true(p2:await())
      assert.are.same({ "c" }, drain(q))
    end)
  end)

  it("close lets getters drain, then returns nil, 'closed'", function()
    run(function()
      local q = loom.queue(1)
      q:put(1)
      local putter = loom.spawn(function() return q:put(2) end)
      loom.sleep(0)
      q:close()
      q:close() -- twice is harmless
      assert.are.same({ nil, "closed" }, { putter:await() })
      assert.are.same({ nil, "closed" }, { q:put(3) })
      assert.are.same({ nil, "closed" }, { q:put_nowait(3) })
      assert.are.equal(1, q:get())
      assert.are.same({ nil, "closed" }, { q:get() })
      assert.are.same({ nil, "closed" }, { q:get_nowait() })
      local q2 = loom.queue()
      local getter = loom.spawn(function() return q2:get() end)
      loom.sleep(0)
      q2:close()
      assert.are.same({ nil, "closed" }, { getter:await() })
    end)
  end)

  it("items() iterates until closed and drained", function()
    run(function()
      local q = loom.queue(2)
      loom.spawn(function()
        for i = 1, 5 do q:put(i) end
        q:close()
      end)
      local got = {}
      for item in q:items() do got[#got + 1] = item end
      assert.are.same({ 1, 2, 3, 4, 5 }, got)
    end)
  end)

  it("join waits for task_done on every item", function()
    run(function()
      local q = loom.queue()
      local done = 0
      for i = 1, 3 do q:put(i) end
      for _ = 1, 2 do
        loom.spawn(function()
          while true do
            local v = q:get()
            if not v then return end
            loom.sleep(0.005 * v)
            done = done + 1
            q:task_done()
          end
        end)
      end
      q:join()
      assert.are.equal(3, done)
      assert.has_error(function() q:task_done() end, "task_done: called more times than items were put")
      q:close()
    end)
  end)

  it("refuses bad arguments", function()
    local q = loom.queue()
    assert.has_error(function() q:put_nowait(nil) end, "bad argument #1 to 'put_nowait' (nil items are refused)")
    assert.has_error(function() loom.queue(-1) end, "bad argument #1 to 'queue' (maxsize must not be negative)")
    assert.has_error(function() loom.queue(0, { order = "random" }) end)
    assert.has_error(function() loom.queue(0, { less = 1 }) end)
    assert.has_error(function() q.size(nil) end, "bad argument #1 to 'size' (loom.Queue expected, got nil)")
    assert.has_error(function() q:get() end, "loom.Queue:get: not inside a task (wrap the program in loom.run)")
    run(function() assert.has_error(function() q:put(nil) end, "bad argument #1 to 'put' (nil items are refused)") end)
    assert.are.equal(0, #q)
  end)
end)
