--- loom: asyncio-style concurrency for Lua 5.4 on libuv.
-- The scheduler, tasks, timers, queues and locks live in the C module
-- `loom.core`; this module re-exports them and adds the combinators, which
-- are rarely-run orchestration written in Lua over the core's done callbacks
-- and deadline scopes.
-- @module loom
local core = require "loom.core"

local loom = {}
for name, fn in pairs(core) do
  if name:sub(1, 1) ~= "_" then loom[name] = fn end
end

local spawn, current, queue, countdown = core.spawn, core.current, core.queue, core._countdown
local is_cancelled, on_done, first_results = core.is_cancelled, core._on_done, core._first_results
local Task = core._Task
local unpack, select, type, error, pcall = table.unpack, select, type, error, pcall

-- table.pack, through the table constructor: it stores with SETLIST, not one
-- lua_seti per value (gather takes 100,000 arguments).
local function pack(...)
  return { n = select("#", ...), ... }
end

local function typename(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and type(mt.__name) == "string" and mt.__name or type(v)
end

-- loom's own frames are told from the user's by this directory (errors.c)
debug.getregistry()["loom.srcdir"] = debug.getinfo(1, "S").source:match("^(@.*[/\\])") or "@loom/"

local function need_task(fname)
  if current() == nil then core._not_in_task("loom." .. fname) end
end

-- The tasks for a combinator's arguments (packed in `args`): tasks as they
-- are, functions spawned, all watched by a new countdown of `mode`. Every
-- argument is checked before anything is spawned. Returns tasks, countdown.
local function as_tasks(fname, args, mode)
  local n = args.n
  for i = 1, n do
    local v = args[i]
    if type(v) ~= "function" and getmetatable(v) ~= Task then
      error(("bad argument #%d to '%s' (function or task expected, got %s)"):format(i, fname, typename(v)), 3)
    end
  end
  need_task(fname)
  local cd = countdown(n, mode)
  local tasks = {}
  for i = 1, n do
    local v = args[i]
    if type(v) == "function" then
      tasks[i] = cd:spawn(v)
    else
      tasks[i] = v
      cd:watch(v)
    end
  end
  return tasks, cd
end

local function cancel_all(tasks, n)
  for i = 1, n do tasks[i]:cancel() end
end

-- Waits until every one of tasks[1..n] has ended, whatever the outcome, so
-- their cleanup has run. A cancellation of the caller meanwhile is held back
-- and raised afterwards.
local function settle(tasks, n)
  local cd = countdown(n, "settle")
  for i = 1, n do cd:watch(tasks[i]) end
  local held
  while true do
    local ok, err = pcall(cd.wait, cd)
    if ok then break end
    if not is_cancelled(err) then error(err, 0) end
    held = held or err
  end
  if held then error(held, 0) end
end

-- Blocks until the countdown fires; if the caller is cancelled meanwhile,
-- cancels tasks[1..n], waits for them to end, and re-raises the cancellation.
local function wait_or_cancel(cd, tasks, n)
  local ok, err = pcall(cd.wait, cd)
  if not ok then
    cancel_all(tasks, n)
    settle(tasks, n)
    error(err, 0)
  end
end

--- Runs functions (spawned as tasks) and tasks concurrently and returns the
-- first result of each, in argument order. If one fails, the others are
-- cancelled and awaited, then its error is raised (the same value).
-- Cancelling the caller cancels them all. Blocks.
-- @param ... functions or tasks
-- @return the first result of each, in argument order
-- @raise the first error of one of them
-- @usage local users, posts = loom.gather(function() return fetch("/users") end,
--                                       function() return fetch("/posts") end)
function loom.gather(...)
  local args = pack(...)
  local n = args.n
  local tasks, cd = as_tasks("gather", args, "all")
  wait_or_cancel(cd, tasks, n)
  local failed = cd:task()
  if failed then
    cancel_all(tasks, n)
    settle(tasks, n)
    return failed:result() -- raises its error
  end
  return first_results(tasks, n)
end

--- Like gather, but never raises for their errors. Blocks.
-- @param ... functions or tasks
-- @treturn {table,...} in argument order, `{ok = true, value = v}` or
-- `{ok = false, error = e}` for each
-- @usage for i, r in ipairs(loom.all_settled(a, b, c)) do
--   print(i, r.ok and r.value or r.error)
-- end
function loom.all_settled(...)
  local args = pack(...)
  local n = args.n
  local tasks, cd = as_tasks("all_settled", args, "settle")
  wait_or_cancel(cd, tasks, n)
  local records = {}
  for i = 1, n do
    local t = tasks[i]
    if t:status() == "done" then
      records[i] = { ok = true, value = (t:result()) }
    else
      records[i] = { ok = false, error = t:error() }
    end
  end
  return records
end

--- The results of the first function or task to finish (or its error); the
-- others are cancelled and awaited. Blocks.
-- @param ... functions or tasks
-- @return the winner's results
-- @raise the winner's error
-- @usage local reply = loom.race(function() return ask(primary) end, function() return ask(mirror) end)
function loom.race(...)
  local args = pack(...)
  local n = args.n
  if n == 0 then error("bad argument #1 to 'race' (function or task expected, got no value)", 2) end
  local tasks, cd = as_tasks("race", args, "first")
  wait_or_cancel(cd, tasks, n)
  local first = cd:task()
  cancel_all(tasks, n)
  settle(tasks, n)
  return first:result()
end

local RETURN_WHEN = { all = true, first = true, first_error = true }

--- Waits for tasks without cancelling any, and returns two lists: the tasks
-- that have ended and those still pending (each in input order). Blocks.
-- @tparam {Task,...} tasks tasks (functions are spawned)
-- @tparam[opt] table opts `timeout` (seconds); `return_when`: `"all"`
-- (default), `"first"` (the first to end) or `"first_error"` (the first to
-- fail, else all)
-- @treturn {Task,...} done
-- @treturn {Task,...} pending
-- @usage local done, pending = loom.wait(tasks, { timeout = 5 })
-- for _, t in ipairs(done) do if t:error() then print(t.name, t:error()) end end
function loom.wait(tasks, opts)
  if type(tasks) ~= "table" then
    error(("bad argument #1 to 'wait' (table expected, got %s)"):format(typename(tasks)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("bad argument #2 to 'wait' (table expected, got %s)"):format(typename(opts)), 2)
  end
  opts = opts or {}
  local when = opts.return_when or "all"
  if not RETURN_WHEN[when] then
    error(("bad argument #2 to 'wait' (return_when must be \"all\", \"first\" or \"first_error\", got %s)"):format(
      tostring(when)), 2)
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or not (opts.timeout >= 0)) then
    error("bad argument #2 to 'wait' (timeout must be a non-negative number)", 2)
  end
  local list = pack(unpack(tasks))
  local n = list.n
  local mode = when == "first" and "first" or (when == "first_error" and "all" or "settle")
  local ts, cd = as_tasks("wait", list, mode)
  cd:wait(opts.timeout)
  local finished, pending = {}, {}
  for i = 1, n do
    local t = ts[i]
    if t:done() then finished[#finished + 1] = t else pending[#pending + 1] = t end
  end
  return finished, pending
end

--- An iterator over tasks in the order they finish. Each step blocks.
-- @tparam {Task,...} tasks tasks (functions are spawned)
-- @tparam[opt] number timeout seconds for the whole iteration; running out
-- while tasks are pending raises "as_completed: timeout"
-- @return an iterator giving each task once it has ended
-- @usage for t in loom.as_completed(tasks) do print(t:result()) end
function loom.as_completed(tasks, timeout)
  if type(tasks) ~= "table" then
    error(("bad argument #1 to 'as_completed' (table expected, got %s)"):format(typename(tasks)), 2)
  end
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout >= 0)) then
    error(("bad argument #2 to 'as_completed' (non-negative number expected, got %s)"):format(tostring(timeout)), 2)
  end
  local list = pack(unpack(tasks))
  local ts = as_tasks("as_completed", list, "settle")
  local n = list.n
  local q = queue()
  for i = 1, n do on_done(ts[i], function(t) q:put_nowait(t) end) end
  local deadline = timeout and core.now() + timeout
  local given = 0
  return function()
    if given == n then return nil end
    local t
    if deadline then
      local ok, got = loom.timeout(math.max(0, deadline - core.now()), q.get, q)
      if not ok then error(("as_completed: timeout (%d of %d tasks pending)"):format(n - given, n), 2) end
      t = got
    else
      t = q:get()
    end
    given = given + 1
    return t
  end
end

--- Runs `fn(...)` in its own task so that cancelling the caller does not
-- interrupt it; the caller sees its cancellation after fn has finished.
-- Blocks.
-- @tparam function fn the work to protect
-- @param ... its arguments
-- @return fn's results
-- @raise fn's error, or the caller's cancellation once fn is done
-- @usage loom.shield(save_state, db) -- finishes even if we are cancelled
function loom.shield(fn, ...)
  if type(fn) ~= "function" then
    error(("bad argument #1 to 'shield' (function expected, got %s)"):format(typename(fn)), 2)
  end
  need_task("shield")
  local t = spawn(fn, ...)
  settle({ t }, 1)
  return t:result()
end

loom.condition = require "loom.condition"
local resilience = require "loom.resilience"
loom.retry, loom.rate_limit = resilience.retry, resilience.rate_limit
loom.group = require "loom.group"
loom.fs = require "loom.fs"
local net = require "loom.net"
loom.tcp, loom.unix, loom.dns, loom.udp = net.tcp, net.unix, net.dns, net.udp
local proc = require "loom.process"
loom.process, loom.signal = proc.process, proc.signal
loom.tls = require "loom.tls"
loom.http = require "loom.http"
loom.websocket = require "loom.websocket"
loom.pg = require "loom.pg"

-- loom.thread.run is documented in src/thread.c.
loom.thread = { run = core._thread_run }

--- In a worker of a server started with `workers = n`, its id (`1 .. n`; a
-- replacement keeps the id of the worker it replaces); nil elsewhere.
-- Never blocks.
-- @treturn integer|nil
-- @usage print(("worker %s ready"):format(loom.worker_id() or "-"))
function loom.worker_id()
  return require("loom.workers").id()
end

local core_run = core.run
if os.getenv("LOOM_WORKER_ID") then -- a worker of loom.workers: its supervisor ends it
  local run = core.run
  core_run = function(fn, ...) return require("loom.workers")._run(run, fn, ...) end
end

local task_info = core._task_info

--- Writes the task tree: each live task under the one that spawned it, with
-- its name, state, where it waits, where it was spawned (debug mode) and
-- whether it belongs to a group. Never blocks.
-- @tparam[opt] file out where to write (anything with a `write` method;
-- default io.stderr)
-- @treturn string the text written
-- @usage loom.dump() -- on stderr: "main [running] at app.lua:12 ..."
function loom.dump(out)
  if out ~= nil and ((type(out) ~= "table" and type(out) ~= "userdata") or type(out.write) ~= "function") then
    error(("bad argument #1 to 'dump' (file expected, got %s)"):format(typename(out)), 2)
  end
  local tasks = core.tasks()
  local byid, children, roots = {}, {}, {}
  for _, t in ipairs(tasks) do byid[task_info(t)] = t end
  for _, t in ipairs(tasks) do
    local _, parent = task_info(t)
    if byid[parent] then
      children[parent] = children[parent] or {}
      table.insert(children[parent], t)
    else
      roots[#roots + 1] = t
    end
  end
  local members = core._group_members
  local lines = { ("loom: %d live task%s"):format(#tasks, #tasks == 1 and "" or "s") }
  local function show(t, depth)
    local id, parent, where, spawned, age, waits_in = task_info(t)
    local line = ("%s%s [%s]"):format(("  "):rep(depth), t.name, t:status())
    if waits_in then line = line .. " in " .. waits_in end
    if where then line = line .. " at " .. where end
    if age then line = line .. (" for %.3f s"):format(age) end
    if spawned then line = line .. " (spawned at " .. spawned .. ")" end
    if members[t] then line = line .. " in a group" end
    if depth == 0 and parent ~= 0 then line = line .. (" (its parent, task-%d, has ended)"):format(parent) end
    lines[#lines + 1] = line
    for _, c in ipairs(children[id] or {}) do show(c, depth + 1) end
  end
  for _, t in ipairs(roots) do show(t, 0) end
  local text = table.concat(lines, "\n") .. "\n"
  ;(out or io.stderr):write(text)
  return text
end

-- The inspect signal's writer: the task tree and the loop's figures, on
-- stderr or appended to LOOM_INSPECT_FILE. Runs on the loop's thread
-- between steps, and never blocks.
local function inspect_writer()
  local path = os.getenv("LOOM_INSPECT_FILE")
  local out = path and path ~= "" and io.open(path, "a") or io.stderr
  out:write(("loom: inspect at %s\n"):format(os.date("!%Y-%m-%d %H:%M:%S UTC")))
  loom.dump(out)
  local s = core.stats()
  out:write(("loom: stats: %d tasks, %d ready, %d handles, %d steps; loop lag %.1f ms at most, %.1f ms in the last second\n")
    :format(s.tasks, s.ready, s.handles, s.steps, s.loop_lag_max * 1000, s.loop_lag_recent * 1000))
  if out == io.stderr then out:flush() else out:close() end
end

-- fn, with the inspect signal installed first when asked for.
local function with_inspect(signal, fn)
  if signal == nil or signal == "" then return fn end
  return function(...)
    core._inspect(signal, inspect_writer)
    return fn(...)
  end
end

local run_options = { debug = true, slow_step = true, shutdown_signals = true, inspect = true, clock = true }
local warned_guess = false

-- loom.run with options decided: opts is a table (possibly empty).
local function run_with(opts, fn, ...)
  for k in pairs(opts) do
    if not run_options[k] then
      error(("bad argument #1 to 'run' (unknown option '%s')"):format(tostring(k)), 3)
    end
  end
  if opts.slow_step ~= nil and (type(opts.slow_step) ~= "number" or opts.slow_step <= 0) then
    error("bad argument #1 to 'run' (slow_step must be a positive number of seconds)", 3)
  end
  local sigs = opts.shutdown_signals
  if sigs ~= nil and (type(sigs) ~= "table" or #sigs == 0) then
    error("bad argument #1 to 'run' (shutdown_signals must be a list of signal names)", 3)
  end
  if opts.inspect ~= nil and type(opts.inspect) ~= "string" and math.type(opts.inspect) ~= "integer" then
    error("bad argument #1 to 'run' (inspect must be a signal name such as \"SIGUSR1\")", 3)
  end
  if opts.clock ~= nil and opts.clock ~= "virtual" and opts.clock ~= "real" then
    error("bad argument #1 to 'run' (clock must be \"virtual\" or \"real\")", 3)
  end
  if opts.debug ~= nil or opts.slow_step ~= nil then core._debug(opts.debug, opts.slow_step) end
  if opts.clock then core._clock(opts.clock) end
  fn = with_inspect(opts.inspect or os.getenv("LOOM_INSPECT"), fn)
  if sigs == nil then return core_run(fn, ...) end
  local caught
  local results = table.pack(pcall(core_run, function(...)
    local main = core.current()
    local watcher = spawn(function()
      caught = core._signal_wait(table.unpack(sigs))
      main:cancel("signal " .. caught)
    end)
    watcher.name = "shutdown signals"
    local r = table.pack(fn(...))
    watcher:cancel()
    return table.unpack(r, 1, r.n)
  end, ...))
  if caught then core._raise(caught) end
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

--- Runs `fn(...)` as the main task on a fresh loop and returns its results;
-- blocks the caller (it is the loop). When main ends, tasks still running
-- are cancelled and awaited, streams closed by then finish flushing, and
-- handles are closed. If main raised, the same error is raised again (at
-- this outermost level a string error gains the task's traceback).
-- `loom.run(opts, fn, ...)` takes options first: a table first is always
-- options, a function first never is.
-- @tparam[opt] table opts `shutdown_signals` (a list such as
-- `{"SIGINT", "SIGTERM"}`: on the first of them main is cancelled, its
-- cleanup runs, the other tasks are cancelled and awaited, and the process
-- ends by that signal, exit status 130 or 143); `debug = true` (debug mode,
-- as LOOM_DEBUG=1: spawn locations recorded, steps longer than `slow_step`
-- seconds, default 0.1, reported on stderr); `inspect = "SIGUSR1"` (as
-- LOOM_INSPECT=SIGUSR1: on that signal the program writes `loom.dump()` and
-- `loom.stats()` to stderr, or appends them to LOOM_INSPECT_FILE, and goes
-- on); `clock = "virtual"` (a test clock: `loom.now()` starts at 0 and,
-- whenever nothing is ready and no I/O has arrived, jumps to the next
-- deadline); an unknown option raises
-- @tparam function fn the main task's body
-- @param ... its arguments
-- @return fn's results
-- @raise fn's error; "a loop is already running" inside a loop
-- @usage loom.run(function() print(loom.gather(fetch_a, fetch_b)) end)
-- loom.run({ shutdown_signals = { "SIGINT", "SIGTERM" } }, main)
function loom.run(opts, fn, ...)
  if type(opts) == "table" then
    if type(fn) ~= "function" then
      error(("bad argument #2 to 'run' (function expected, got %s)"):format(fn == nil and "nil" or typename(fn)), 2)
    end
    return run_with(opts, fn, ...)
  end
  if type(opts) ~= "function" then
    error(("bad argument #1 to 'run' (function expected, got %s)"):format(opts == nil and "nil" or typename(opts)), 2)
  end
  -- no options: opts is the main function, fn its first argument
  local main, arg1 = opts, fn
  if select("#", ...) ~= 0 or type(arg1) ~= "table" or
      (arg1.shutdown_signals == nil and arg1.debug == nil and arg1.slow_step == nil) then
    main = with_inspect(os.getenv("LOOM_INSPECT"), main)
    if arg1 == nil and select("#", ...) == 0 then return core_run(main) end
    return core_run(main, arg1, ...)
  end
  -- the old form, loom.run(fn, opts): guessed from the field names; kept for
  -- one release
  if not warned_guess then
    warned_guess = true
    io.stderr:write("loom: loom.run(fn, opts) is deprecated: write loom.run(opts, fn)\n")
  end
  return run_with(arg1, main)
end

return loom
