--- loom.busted: testing async code with busted, as pytest-asyncio does for
-- asyncio. `async(body [, opts])` makes a busted test function that runs
-- `body` as the main task of `loom.run`:
--
--     local async = require "loom.busted"
--     it("times out a stalled peer", async(function()
--       ...
--     end, { timeout = 5, clock = "virtual" }))
--
-- The test fails, with the failing task's traceback, when the body raises;
-- when it runs past `timeout` seconds of wall time (default 10, also under
-- the virtual clock: the task tree is reported, as `loom.dump()` writes it,
-- and the body cancelled); when a task's error was never retrieved; or when
-- a loom handle (stream, server, process, file watcher, database
-- connection) was left open.
-- @module loom.busted
local loom = require "loom"
local core = require "loom.core"

local async = {}

local function check_opts(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error("bad argument #2 to 'async' (table expected, got " .. type(opts) .. ")", 3) end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout <= 0) then
    error("bad argument #2 to 'async' (timeout must be a positive number)", 3)
  end
  if opts.clock ~= nil and opts.clock ~= "virtual" and opts.clock ~= "real" then
    error("bad argument #2 to 'async' (clock must be \"virtual\" or \"real\")", 3)
  end
  return opts
end

--- Runs `body(...)` as a test would: in `loom.run`, with the hard timeout
-- and the checks above; returns body's results or raises the failure.
-- @func body the test's body
-- @tparam[opt] table opts `timeout` (seconds of wall time, default 10),
-- `clock` (`"virtual"` or `"real"`)
-- @param ... the body's arguments
-- @return body's results
function async.run(body, opts, ...)
  if type(body) ~= "function" then
    error("bad argument #1 to 'run' (function expected, got " .. type(body) .. ")", 2)
  end
  opts = check_opts(opts)
  local limit = opts.timeout or 10
  local before = core._unretrieved()
  local hang
  local results = table.pack(pcall(loom.run, { clock = opts.clock }, function(...)
    local main = core.current()
    core._alarm(limit, function()
      hang = loom.dump({ write = function() end })
      main:cancel(("test timed out after %g s"):format(limit))
    end)
    return body(...)
  end, ...))
  if hang then
    error(("test timed out after %g s (wall time); the tasks then:\n%s"):format(limit, hang), 0)
  end
  if not results[1] then error(results[2], 0) end
  local after, report = core._unretrieved()
  if after > before then error("loom.busted: " .. report, 0) end
  local left = core._last_handles()
  if left ~= 0 then error(("loom.busted: %d loom handle(s) left open (streams, servers, ...)"):format(left), 0) end
  return table.unpack(results, 2, results.n)
end

-- async(body [, opts]): a busted test function running body under loom
-- (see the module's description).
return setmetatable(async, {
  __call = function(_, body, opts)
    if type(body) ~= "function" then
      error("bad argument #1 to 'async' (function expected, got " .. type(body) .. ")", 2)
    end
    opts = check_opts(opts)
    return function(...) return async.run(body, opts, ...) end
  end,
})
