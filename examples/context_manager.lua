-- The "async context manager": a resource whose opening and closing block
-- (a connection, here a fake one) used through a <close> variable. Its
-- close runs when the block ends, when an error unwinds it, and when the
-- task is cancelled; the close itself may block.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

local t0
local function log(fmt, ...) print(string.format("%5.2fs  " .. fmt, loom.now() - t0, ...)) end

local Connection = {}
Connection.__index = Connection
Connection.__close = function(self)
  loom.sleep(0.1 * SCALE) -- a goodbye message to the server: closing blocks too
  self.open = false
  log("%s closed", self.name)
end

local function connect(name)
  loom.sleep(0.1 * SCALE) -- the handshake
  log("%s open", name)
  return setmetatable({ name = name, open = true }, Connection)
end

function Connection:query(q)
  assert(self.open, "query on a closed connection")
  loom.sleep(0.2 * SCALE)
  if q == "bad" then error("query failed: " .. q, 0) end
  return q .. " -> 42 rows"
end

loom.run(function()
  t0 = loom.now()
  do
    local db <close> = connect("conn-1")
    log("%s", db:query("select"))
  end                                     -- closed here
  local ok, err = pcall(function()
    local db <close> = connect("conn-2")
    db:query("bad")                       -- raises: closed while unwinding
  end)
  log("caught: %s", err)
  local t = loom.spawn(function()
    local db <close> = connect("conn-3")
    db:query("a very long query")         -- cancelled while waiting: closed too
  end)
  loom.sleep(0.15 * SCALE)
  t:cancel()
  pcall(t.await, t)
  log("conn-3's task ended %s, ok = %s", t:status(), tostring(ok))
end)
