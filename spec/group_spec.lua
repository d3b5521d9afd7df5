local loom = require "loom"
local helper = require "helper"
local run = helper.run

describe("loom.group", function()
  it("waits for every child on normal exit", function()
    helper.vrun(function()
      local results = {}
      local r = loom.group(function(g)
        for i = 1, 3 do g:spawn(function() loom.sleep(0.05 * i); results[i] = i end) end
        return "body"
      end)
      assert.are.equal("body", r)
      assert.are.same({ 1, 2, 3 }, results)
      assert.is_true(helper.near(loom.now(), 0.15), loom.now())
    end)
  end)

  it("works as a <close> variable", function()
    run(function()
      local done = 0
      do
        local g <close> = loom.group()
        for _ = 1, 3 do g:spawn(function() loom.sleep(0.01); done = done + 1 end) end
        assert.are.equal(3, g:size())
      end
      assert.are.equal(3, done)
    end)
  end)

  it("first child failure cancels siblings and the body, and is raised from the group", function()
    local log = {}
    run(function()
      local e = { why = "child failed" }
      local sibling
      local ok, err = pcall(function()
        local g <close> = loom.group()
        sibling = g:spawn(function()
          local _ <close> = setmetatable({}, { __close = function() log[#log + 1] = "sibling cleaned" end })
          loom.sleep(10)
        end)
        g:spawn(function() loom.sleep(0.01); error(e) end)
        local _ <close> = setmetatable({}, { __close = function() log[#log + 1] = "body cleaned" end })
        loom.sleep(10)
        log[#log + 1] = "not reached"
      end)
      assert.is_false(ok)
      assert.are.equal(e, err)
      assert.is_true(sibling:cancelled())
    end)
    table.sort(log)
    assert.are.same({ "body cleaned", "sibling cleaned" }, log)
  end)

  it("raises a child failure that happens while it waits on exit", function()
    run(function()
      local ok, err = pcall(loom.group, function(g)
        g:spawn(function() loom.sleep(0.02); error("late", 0) end)
        g:spawn(loom.sleep, 10)
      end)
      assert.is_false(ok)
      assert.matches("^late", err)
    end)
  end)

  it("does not lose errors of further children", function()
    local out = helper.lua([[
      local loom = require "loom"
      loom.run(function()
        local ok, err = pcall(loom.group, function(g)
          local a = g:spawn(function() loom.sleep(0.01); error("first failure", 0) end)
          local b = g:spawn(function()
            local _ <close> = setmetatable({}, { __close = function() error("second failure", 0) end })
            loom.sleep(10)
          end)
          a.name, b.name = "a", "b"
        end)
        print("group raised: " .. err:match("^[^\n]*"))
      end)
    ]])
    assert.matches("group raised: first failure", out, 1, true)
    assert.matches("task 'b' failed and nobody retrieved its error", out, 1, true)
    assert.matches("second failure", out, 1, true)
  end)

  it("a body error cancels the children and passes through", function()
    run(function()
      local child
      local e = {}
      local ok, err = pcall(loom.group, function(g)
        child = g:spawn(loom.sleep, 10)
        error(e)
      end)
      assert.is_false(ok)
      assert.are.equal(e, err)
      assert.is_true(child:cancelled())
    end)
  end)

  it("cancelling the task running a group cancels the children: no orphans", function()
    run(function()
      local children = {}
      local owner = loom.spawn(function()
        loom.group(function(g)
          for i = 1, 3 do children[i] = g:spawn(loom.sleep, 10) end
          loom.sleep(10)
        end)
      end)
      loom.sleep(0.01)
      owner:cancel()
      local ok, err = pcall(owner.await, owner)
      assert.is_false(ok)
      assert.is_true(loom.is_cancelled(err))
      for i = 1, 3 do assert.is_true(children[i]:cancelled()) end
    end)
  end)

  it("cancel() cancels every child, spawn after the end raises", function()
    run(function()
      local g
      local t0 = loom.now()
      loom.group(function(grp)
        g = grp
        grp:spawn(loom.sleep, 10)
        grp:spawn(loom.sleep, 10)
        grp:cancel()
      end)
      assert.is_true(loom.now() - t0 < helper.upper(0, 0.5))
      assert.has_error(function() g:spawn(print) end, "spawn: the group has already ended")
      assert.has_error(function() loom.group(5) end, "bad argument #1 to 'group' (function expected, got number)")
    end)
    assert.has_error(function() loom.group() end, "loom.group: not inside a task (wrap the program in loom.run)")
  end)
end)
