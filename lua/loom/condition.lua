--- loom.condition: a condition variable, as asyncio.Condition.
-- Written in Lua over the C lock and events: waiting on a condition is never
-- on a hot path, and its cancellation rules read more clearly here.
-- @module loom.condition
local core = require "loom.core"

local Condition = { __name = "loom.Condition" }
Condition.__index = Condition

local lock_mt = getmetatable(core.lock())

--- A condition variable over `lock` (a new lock if nil), as
-- asyncio.Condition: `loom.condition([lock])`. Never blocks.
-- @function condition
-- @param[opt] lock a `loom.lock()`
-- @treturn Condition
-- @usage local cond = loom.condition()
-- do local _ <close> = cond:acquire(); while not ready do cond:wait() end end

--- A condition variable.
-- @type Condition
local function new(lock)
  if lock ~= nil and getmetatable(lock) ~= lock_mt then
    error(("bad argument #1 to 'condition' (loom.Lock expected, got %s)"):format(
      type(lock) == "userdata" and (getmetatable(lock) or {}).__name or type(lock)), 2)
  end
  return setmetatable({ lock = lock or core.lock(), waiters = {}, first = 1, last = 0 }, Condition)
end

--- Acquires the underlying lock. Blocks.
-- @return its guard (usable with `<close>`)
-- @usage local _ <close> = cond:acquire()
function Condition:acquire() return self.lock:acquire() end
--- Releases the underlying lock. Never blocks.
-- @usage cond:release()
function Condition:release() return self.lock:release() end
--- Whether the underlying lock is held. Never blocks.
-- @treturn boolean
-- @usage assert(cond:locked())
function Condition:locked() return self.lock:locked() end

local function check_owned(self, what)
  if not self.lock:owned() then
    error(what .. ": the condition's lock is not held by this task", 3)
  end
end

local function remove(self, ev)
  for i = self.first, self.last do
    if self.waiters[i] == ev then
      table.move(self.waiters, i + 1, self.last, i)
      self.waiters[self.last] = nil
      self.last = self.last - 1
      return
    end
  end
end

--- Releases the lock, waits until notified, re-acquires the lock. The lock
-- is held again when wait returns or raises, even when cancelled. Blocks.
-- @treturn boolean true
-- @raise "wait: the condition's lock is not held by this task"
-- @usage while not ready do cond:wait() end
function Condition:wait()
  check_owned(self, "wait")
  local ev = core.event()
  self.last = self.last + 1
  self.waiters[self.last] = ev
  self.lock:release()
  local ok, err = pcall(ev.wait, ev)
  if not ok then
    if ev:is_set() then
      self:_wake(1) -- notified, then cancelled: the notification goes to the next waiter
    else
      remove(self, ev)
    end
  end
  local pending
  while true do -- re-acquire even when cancelled; keep the cancellation for after
    local got, e = pcall(self.lock.acquire, self.lock)
    if got then break end
    if not core.is_cancelled(e) then error(e, 0) end
    pending = pending or e
  end
  if not ok then error(err, 0) end
  if pending then error(pending, 0) end
  return true
end

--- Waits until `predicate()` returns a true value and returns that value;
-- the lock must be held. Blocks.
-- @tparam function predicate checked with the lock held
-- @return predicate's true value
-- @usage local item = cond:wait_for(function() return next_item() end)
function Condition:wait_for(predicate)
  if type(predicate) ~= "function" then
    error(("bad argument #1 to 'wait_for' (function expected, got %s)"):format(type(predicate)), 2)
  end
  local v = predicate()
  while not v do
    self:wait()
    v = predicate()
  end
  return v
end

function Condition:_wake(n)
  while n > 0 and self.first <= self.last do
    local ev = self.waiters[self.first]
    self.waiters[self.first] = nil
    self.first = self.first + 1
    ev:set()
    n = n - 1
  end
end

--- Wakes up to `n` waiting tasks, in the order they waited; the lock must
-- be held. Never blocks.
-- @tparam[opt=1] integer n
-- @raise "notify: the condition's lock is not held by this task"
-- @usage cond:notify()
function Condition:notify(n)
  check_owned(self, "notify")
  if n ~= nil and math.type(n) ~= "integer" then
    error(("bad argument #1 to 'notify' (integer expected, got %s)"):format(type(n)), 2)
  end
  self:_wake(n or 1)
end

--- Wakes every waiting task; the lock must be held. Never blocks.
-- @usage cond:notify_all()
function Condition:notify_all()
  check_owned(self, "notify_all")
  self:_wake(self.last - self.first + 1)
end

return new
