--- loom.workers: `{workers = n}` on `loom.http.serve` and `loom.tcp.serve`,
-- one server in several processes, with the operational behaviour of
-- nginx's master, gunicorn's arbiter and Node's cluster.
--
-- The starting process becomes the supervisor. It never serves: it opens
-- one listening socket per worker (SO_REUSEPORT, so the kernel spreads
-- connections evenly, with no thundering herd) and keeps it; each worker is
-- the same script with the same arguments, started through loom.process in
-- a session of its own (a terminal's ^C reaches the supervisor only) and
-- given its socket as descriptor 3 and a channel to the supervisor as
-- descriptor 4. Because the supervisor holds every socket, a worker that
-- dies or is replaced loses nothing: connections queue on its socket until
-- its successor accepts them (Linux resets the connections queued on a
-- reuseport socket when its last holder closes it, so no socket is closed
-- while it is still wanted).
--
-- The channel carries "ready" (the worker accepts) up and "stop" / "quit"
-- down; its end tells a worker that the supervisor is gone. Workers' stdout
-- and stderr pass through the supervisor, each line prefixed with
-- `[worker N]`.
-- @module loom.workers
local core = require "loom.core"

local workers = {}

local LISTEN_FD, CHANNEL_FD = 3, 4
local READY_TIMEOUT = 30 -- seconds a replacement may take to start accepting
local MAX_BACKOFF = 10

-- This process's worker id (nil outside a worker).
local ID = tonumber(os.getenv("LOOM_WORKER_ID") or "")

--- The worker's id, `1 .. n` in a worker (a replacement keeps the id of the
-- worker it replaces), nil elsewhere.
-- @treturn integer|nil
function workers.id()
  return ID
end

local function log(msg)
  io.stderr:write("loom: ", msg, "\n")
  io.stderr:flush()
end

-- Worker side.

local state = { main = nil, stopped = false, serving = false, done = nil }

-- loom.run in a worker: main is remembered (the supervisor's stop ends it),
-- and once main's body returns the worker goes on serving until stopped.
-- Stopped, the process ends with status 0 whatever main was doing.
function workers._run(core_run, fn, ...)
  local results = table.pack(pcall(core_run, function(...)
    state.main = core.current()
    local r = table.pack(fn(...))
    if state.serving then state.done:wait() end
    return table.unpack(r, 1, r.n)
  end, ...))
  if state.stopped then
    io.stdout:flush()
    io.stderr:flush()
    os.exit(0)
  end
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

-- The worker's life once it serves: the supervisor's "stop" (or SIGTERM /
-- SIGINT sent to the worker itself, or the supervisor gone) stops it
-- gracefully; "quit", SIGQUIT or a second stop force it.
local function worker_life(chan, shutdown, timeout)
  local events = core.queue()
  local sigs = core._signal_watch("SIGTERM", "SIGINT", "SIGQUIT")
  core.spawn(function()
    while true do
      local line = chan:read_line()
      events:put(line or "gone")
      if not line then return end
    end
  end).name = "worker channel"
  if sigs then
    core.spawn(function()
      while true do
        local s = sigs:wait()
        if not s then return end
        events:put(s)
      end
    end).name = "worker signals"
  end
  local function finish()
    state.stopped = true
    state.done:set()
    local main = state.main
    if main and not main:done() then main:cancel("worker stopped") end
  end
  local stopping = false
  while true do
    local ev = events:get()
    if ev == "quit" or ev == "SIGQUIT" or (stopping and (ev == "stop" or ev == "SIGTERM" or ev == "SIGINT")) then
      return finish()
    elseif not stopping and ev ~= "ready" then
      stopping = true
      core.spawn(function()
        shutdown(timeout)
        finish()
      end).name = "worker shutdown"
    end
  end
end

-- serve() in a worker: the server on the inherited socket, and its life.
local function in_worker(start, opts)
  if state.serving then
    error("loom: a worker serves one server with workers = n (this one already started one)", 3)
  end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.workers, o._listen_fd = nil, LISTEN_FD
  local server, shutdown, err, code = start(o)
  if not server then return nil, err, code end
  local chan, cerr, ccode = core._pipe_open(CHANNEL_FD)
  if not chan then return nil, "worker channel: " .. tostring(cerr), ccode end
  state.serving, state.done = true, core.event()
  chan:write("ready\n")
  core.spawn(worker_life, chan, shutdown, opts.shutdown_timeout or 30).name = "worker " .. ID
  return server
end

-- Supervisor side.

-- The command line that started this script: the interpreter and every
-- argument (arg's negative indices hold the interpreter and its options).
local function command_line()
  local first = 0
  while arg and arg[first - 1] ~= nil do first = first - 1 end
  if not arg or first == 0 then return nil end
  local argv = {}
  for i = first, #arg do argv[#argv + 1] = arg[i] end
  return argv
end

-- The environment, with this worker's id.
local function environment(id)
  local env = { "LOOM_WORKER_ID=" .. id }
  local f = io.open("/proc/self/environ", "rb")
  if f then
    for kv in f:read("a"):gmatch("[^%z]+") do
      if not kv:match("^LOOM_WORKER_ID=") then env[#env + 1] = kv end
    end
    f:close()
  end
  return env
end

-- Copies a worker's output to ours, each line prefixed with its id.
local function relay(stream, out, id)
  if not stream then return end
  core.spawn(function()
    local prefix = ("[worker %d] "):format(id)
    while true do
      local line = stream:read_line()
      if not line then break end
      out:write(prefix, line, "\n")
      out:flush()
    end
    stream:close()
  end).name = "worker output"
end

local function count_of(n)
  if n == "auto" then return math.max(core._cpu_count(), 1) end
  return n
end

-- The supervisor: serve() with workers = n in the starting process.
local function supervise(n, host, port, opts)
  local argv = command_line()
  if not argv then return nil, "workers: cannot tell how this script was started (no arg table)" end
  local addrs, err, code = require("loom.net").dns.resolve(host)
  if not addrs then return nil, err, code end
  local slots = {}
  local function open_slot(id)
    local fd, p, c = core._listen_fd(addrs[1], port, opts.backlog)
    if not fd then return nil, p, c end
    port = p -- port 0: the port the first socket got, for all
    local slot = { id = id, fd = fd, fails = 0 }
    slots[id] = slot
    return slot
  end
  for id = 1, n do
    local slot, e, c = open_slot(id)
    if not slot then
      for _, s in pairs(slots) do core._close_fd(s.fd) end
      return nil, e, c
    end
  end
  local events = core.queue()
  local sigs = assert(core._signal_watch("SIGINT", "SIGTERM", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGQUIT"))
  core.spawn(function()
    while true do
      local s = sigs:wait()
      if not s then return end
      events:put({ signal = s })
    end
  end).name = "supervisor signals"

  local live = {} -- worker record -> true while its process runs
  local stopping, clean = false, true

  local function start(slot)
    local proc, _, out, errout, _, chan = core._spawn(argv, nil, environment(slot.id),
      { "inherit", "pipe", "pipe", slot.fd, "pipe" }, true)
    if not proc then
      log(("worker %d: cannot start: %s"):format(slot.id, tostring(out)))
      return nil
    end
    local w = { slot = slot, proc = proc, chan = chan, ready = core.event(), pid = proc:pid() }
    live[w] = true
    relay(out, io.stdout, slot.id)
    relay(errout, io.stderr, slot.id)
    core.spawn(function()
      while true do
        local line = chan:read_line()
        if not line then break end
        if line == "ready" then w.ready:set() end
      end
    end).name = "worker channel"
    core.spawn(function()
      local status, sig = proc:wait()
      events:put({ exit = w, status = status, sig = sig })
    end).name = "worker " .. slot.id
    slot.worker = w
    return w
  end

  local function tell(w, what)
    if not w.chan:write(what .. "\n") then w.proc:kill(what == "quit" and "SIGKILL" or "SIGTERM") end
  end

  -- SIGHUP: each worker replaced in turn, the new one accepting on the same
  -- socket before the old one is told to stop
  local reloading, reload_again = false, false
  local function reload()
    if reloading then reload_again = true return end
    reloading = true
    core.spawn(function()
      repeat
        reload_again = false
        for id = 1, #slots do
          local slot = slots[id]
          if stopping then break end
          if slot and not slot.removed then
            local old = slot.worker
            local new = start(slot)
            if new then
              local ok = core.timeout(READY_TIMEOUT, new.ready.wait, new.ready)
              if ok and live[new] then
                if old and live[old] then
                  old.retiring = true
                  tell(old, "stop")
                end
              else
                log(("worker %d: its replacement did not start; the old one goes on"):format(id))
                new.retiring = true
                slot.worker = old
                if live[new] then new.proc:kill("SIGKILL") end
              end
            end
          end
        end
      until not reload_again or stopping
      reloading = false
    end).name = "reload"
  end

  local function stop_all(what)
    for w in pairs(live) do tell(w, what) end
  end

  for id = 1, n do start(slots[id]) end
  while next(live) or not stopping do
    local ev = events:get()
    if ev.signal == "SIGINT" or ev.signal == "SIGTERM" then
      if not stopping then
        -- stop: the sockets close with their last worker (each takes what is
        -- queued, then closes), so new connections are refused from then on
        stopping = true
        for _, slot in pairs(slots) do
          if not slot.closed then core._close_fd(slot.fd); slot.closed = true end
        end
        stop_all("stop")
        core.spawn(function()
          core.sleep((opts.shutdown_timeout or 30) + 5)
          for w in pairs(live) do w.proc:kill("SIGKILL") end
        end).name = "shutdown deadline"
      else
        stop_all("quit")
      end
    elseif ev.signal == "SIGQUIT" then
      stopping = true
      stop_all("quit")
    elseif ev.signal == "SIGHUP" and not stopping then
      reload()
    elseif ev.signal == "SIGTTIN" and not stopping then
      local slot = open_slot(#slots + 1)
      if slot then start(slot) end
    elseif ev.signal == "SIGTTOU" and not stopping then
      local last = #slots
      if last > 1 then
        local slot = slots[last]
        slots[last] = nil
        slot.removed = true
        core._close_fd(slot.fd) -- the worker takes what is queued, then its close ends the socket
        slot.closed = true
        if slot.worker and live[slot.worker] then
          slot.worker.retiring = true
          tell(slot.worker, "stop")
        end
      end
    elseif ev.exit then
      local w, slot = ev.exit, ev.exit.slot
      live[w] = nil
      local how = ev.status and ("exit status " .. ev.status) or tostring(ev.sig)
      if stopping then
        if ev.status ~= 0 then
          clean = false
          log(("worker %d (pid %d) ended with %s"):format(slot.id, w.pid, how))
        end
      elseif not w.retiring and slot.worker == w then
        -- died: back off only when it dies before accepting
        if w.ready:is_set() then slot.fails = 0 else slot.fails = slot.fails + 1 end
        local delay = slot.fails == 0 and 0 or math.min(0.1 * 2 ^ (slot.fails - 1), MAX_BACKOFF)
        log(("worker %d (pid %d) ended with %s%s; restarting%s"):format(slot.id, w.pid, how,
          w.ready:is_set() and "" or " before it served",
          delay > 0 and (" in %.1f s"):format(delay) or ""))
        core.spawn(function()
          if delay > 0 then core.sleep(delay) end
          if not stopping and not slot.removed and slot.worker == w then start(slot) end
        end).name = "worker restart"
      end
    end
  end
  sigs:close()
  for _, slot in pairs(slots) do
    if not slot.closed then core._close_fd(slot.fd) end
  end
  if clean then return true end
  return nil, "workers: not every worker stopped cleanly"
end

-- serve() with `workers`: in a worker, `start(opts)` with the inherited
-- socket, giving the server; in the supervisor, the supervision, giving
-- true or nil, msg once every worker has stopped. `start(opts)` returns the
-- server and its `shutdown(timeout)` (stop accepting, finish the work in
-- flight). Blocks in the supervisor.
function workers._serve(fname, host, port, opts, start)
  local n = opts.workers
  if n ~= "auto" and (math.type(n) ~= "integer" or n < 1) then
    error(("bad argument #4 to '%s' (workers must be a positive integer or \"auto\")"):format(fname), 3)
  end
  local t = opts.shutdown_timeout
  if t ~= nil and (type(t) ~= "number" or t < 0) then
    error(("bad argument #4 to '%s' (shutdown_timeout must be a number of seconds)"):format(fname), 3)
  end
  if ID then return in_worker(start, opts) end
  if not core.current() then error(("%s: workers need a task (call it inside loom.run)"):format(fname), 3) end
  return supervise(count_of(n), host, port, opts)
end

return workers
