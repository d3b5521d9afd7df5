--- loom: asyncio-style concurrency for Lua 5.4 on libuv.
-- The scheduler, tasks and timers live in the C module `loom.core`; this
-- module re-exports them and adds what is written in Lua.
-- @module loom
local core = require "loom.core"

local loom = {}
for name, fn in pairs(core) do
  if name:sub(1, 1) ~= "_" then loom[name] = fn end
end

loom.condition = require "loom.condition"

return loom
