--- loom.group: task groups (structured concurrency).
-- `loom.group(function(g) g:spawn(...) end)` or `local g <close> = loom.group()`.
-- Children cannot outlive the group: leaving it waits for them. The first
-- child failure cancels the other children and the group's body, and is
-- raised from the group; errors of further children stay unretrieved, so
-- loom reports them on stderr (never lost). Cancelling the task that runs
-- the group cancels the children too.
-- @module loom.group
local core = require "loom.core"

local spawn, current, event = core.spawn, core.current, core.event
local is_cancelled, on_done = core.is_cancelled, core._on_done

local Group = { __name = "loom.Group" }

-- Every task spawned by a group, for loom.dump (weak: no task kept alive).
local members = setmetatable({}, { __mode = "k" })
core._group_members = members
Group.__index = Group

-- The reason of the cancellation a group sends its body when a child fails.
local CHILD_FAILED = setmetatable({}, { __tostring = function() return "a child task of the group failed" end })

local function new()
  local owner = current()
  if owner == nil then core._not_in_task("loom.group") end
  local g = setmetatable({ owner = owner, children = {}, n = 0, ev = event(), closed = false, waiting = false }, Group)
  g.on_child = function(t, status)
    g.children[t] = nil
    g.n = g.n - 1
    if g.first == nil and status == "failed" then
      g.first = t
      for c in pairs(g.children) do c:cancel() end
      if not g.waiting then g.owner:cancel(CHILD_FAILED) end
    end
    if g.n == 0 then g.ev:set() end
  end
  return g
end

--- `loom.group(fn)` runs `fn(g)` and leaves the group (waiting for its
-- children) before returning fn's results; `loom.group()` returns a group for
-- `local g <close> = loom.group()`, left when the variable goes out of scope.
-- Children cannot outlive the group; the first child failure cancels the
-- others and the body and is raised from the group. Blocks (leaving it).
-- @function group
-- @tparam[opt] function fn the body, given the group
-- @return fn's results, or the group when called without fn
-- @raise the first child's error
-- @usage loom.group(function(g)
--   for _, url in ipairs(urls) do g:spawn(fetch, url) end
-- end)

--- A task group.
-- @type Group

--- Starts `fn(...)` as a child task of the group and returns it. Never blocks.
-- @tparam function fn the child's body
-- @param ... its arguments
-- @treturn Task the child
-- @raise "the group has already ended"
-- @usage g:spawn(fetch, url)
function Group:spawn(fn, ...)
  if getmetatable(self) ~= Group then error("bad argument #1 to 'spawn' (loom.Group expected)", 2) end
  if type(fn) ~= "function" then
    error(("bad argument #1 to 'spawn' (function expected, got %s)"):format(type(fn)), 2)
  end
  if self.closed then error("spawn: the group has already ended", 2) end
  local t = spawn(fn, ...)
  members[t] = true
  self.children[t] = true
  self.n = self.n + 1
  self.ev:clear()
  on_done(t, self.on_child)
  if self.first then t:cancel() end -- the group is already failing
  return t
end

--- Cancels every child; the group still waits for them to end. Never blocks.
-- @usage g:cancel()
function Group:cancel()
  for c in pairs(self.children) do c:cancel() end
end

--- The number of children still running. Never blocks.
-- @treturn integer
-- @usage print(g:size())
function Group:size()
  return self.n
end

--- Leaves the group (what `<close>` calls): waits for the children
-- (cancelling them first if the body ended by an error), then raises the
-- first child failure, if any. A cancellation of the owner while waiting
-- cancels the children and is raised once they have ended. Blocks.
-- @param[opt] err the error the body ended with, if any
-- @raise the first child's error
-- @usage local g = loom.group(); g:spawn(work); g:close()
function Group:close(err)
  if self.closed then return end
  if err ~= nil then self:cancel() end
  self.waiting = true
  local held
  while self.n > 0 do
    local ok, e = pcall(self.ev.wait, self.ev)
    if not ok then
      if not is_cancelled(e) then error(e, 0) end
      held = held or e
      self:cancel()
    end
  end
  self.closed = true
  if self.first then error(self.first:error(), 0) end
  if held then error(held, 0) end
end

Group.__close = Group.close

local function finish(g, ok, ...)
  g:close(not ok and ((...) == nil and false or (...)) or nil)
  if not ok then error((...), 0) end
  return ...
end

-- loom.group itself (documented at the top of the module).
return function(fn)
  if fn == nil then return new() end
  if type(fn) ~= "function" then
    error(("bad argument #1 to 'group' (function expected, got %s)"):format(type(fn)), 2)
  end
  local g = new()
  return finish(g, pcall(fn, g))
end
