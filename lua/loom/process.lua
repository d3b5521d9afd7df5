--- loom.process and loom.signal: child processes whose pipes are loom
-- streams, and waiting for signals. The handles are C objects
-- (src/process.c); this module checks and shapes the options.
-- @module loom.process
local core = require "loom.core"

local process, signal = {}, {}

local Process = { __name = "loom.Process" }
Process.__index = Process

local argerror = require("loom.args").error

local STDIO = { pipe = true, inherit = true, null = true }

local function stdio_mode(v, name, fname)
  if v == nil then return "inherit" end
  if STDIO[v] then return v end
  if math.type(v) == "integer" then return v end
  if type(v) == "userdata" and getmetatable(v) == core._File then
    local fd = v:fileno()
    if fd then return fd end
  end
  argerror(1, fname, ("%s must be \"pipe\", \"inherit\", \"null\" or an open file"):format(name))
end

local function check_spec(spec, fname)
  if type(spec) ~= "table" then argerror(1, fname, ("table expected, got %s"):format(type(spec))) end
  if type(spec[1]) ~= "string" then argerror(1, fname, "the program (spec[1]) must be a string") end
  local argv = {}
  for i = 1, #spec do
    if type(spec[i]) ~= "string" and type(spec[i]) ~= "number" then
      argerror(1, fname, ("argument %d must be a string"):format(i))
    end
    argv[i] = tostring(spec[i])
  end
  local env
  if spec.env ~= nil then
    if type(spec.env) ~= "table" then argerror(1, fname, "env must be a table") end
    env = {}
    for k, v in pairs(spec.env) do env[#env + 1] = tostring(k) .. "=" .. tostring(v) end
  end
  if spec.cwd ~= nil and type(spec.cwd) ~= "string" then argerror(1, fname, "cwd must be a string") end
  return argv, env
end

--- Starts a child process. Never blocks.
-- @function process.spawn
-- @tparam table spec `spec[1]` the program (searched in PATH), the rest of
-- the list its arguments; `cwd`; `env` (a table NAME = value replacing the
-- environment); `stdin`, `stdout`, `stderr`: "pipe" (a Stream in the
-- process's field of that name), "inherit" (the default), "null", or an open
-- loom.fs file
-- @return a Process, or nil, msg, code ("ENOENT" for a program that does not exist)
-- @usage local p = assert(loom.process.spawn{ "tail", "-f", "app.log", stdout = "pipe" })
-- for line in p.stdout:lines() do print(line) end
function process.spawn(spec)
  local argv, env = check_spec(spec, "spawn")
  local modes = { stdio_mode(spec.stdin, "stdin", "spawn"), stdio_mode(spec.stdout, "stdout", "spawn"),
    stdio_mode(spec.stderr, "stderr", "spawn") }
  local p, stdin, stdout, stderr = core._spawn(argv, spec.cwd, env, modes)
  if not p then return nil, stdin, stdout end
  return setmetatable({ handle = p, pid = p:pid(), stdin = stdin, stdout = stdout, stderr = stderr }, Process)
end

--- A child process: `pid`, and `stdin`, `stdout`, `stderr` (Streams for "pipe").
-- @type Process

--- Waits for the process to exit. Blocks.
-- @return the exit code; or nil and the name of the signal that ended it ("SIGKILL")
-- @usage local code = p:wait()
function Process:wait()
  return self.handle:wait()
end

--- Sends a signal. Never blocks.
-- @param[opt="SIGTERM"] sig a name ("SIGTERM", "TERM") or a number
-- @return true, or nil, msg, code
-- @usage p:kill("SIGINT")
function Process:kill(sig)
  return self.handle:kill(sig)
end

--- Functions.
-- @section functions

--- Runs a command to its end. Output and input flow concurrently, so a
-- child that writes a lot while being fed does not deadlock. Blocks.
-- @function process.run
-- @tparam table spec as spawn's (stdout is captured), plus `input` (a string
-- written to its stdin), `stderr = "pipe"` (captured too) and `timeout`
-- (seconds: the child is killed with SIGKILL)
-- @return the output, the exit code (nil and the signal's name if a signal
-- ended it) and, with stderr = "pipe", the standard error; or nil, msg, code
-- ("<cmd>: timeout"/"ETIMEDOUT", "ENOENT" ...)
-- @usage local out, code = loom.process.run{ "git", "status", "--short", timeout = 5 }
function process.run(spec)
  local argv = check_spec(spec, "run")
  local opts = {}
  for k, v in pairs(spec) do opts[k] = v end
  opts.stdout = "pipe"
  opts.stdin = spec.input and "pipe" or (spec.stdin or "null")
  local p, err, code = process.spawn(opts)
  if not p then return nil, err, code end
  local out, errout = {}, {}
  local function drain(stream, into)
    if not stream then return end
    local _ <close> = stream -- closed however the drain ends (a timeout cancels it)
    for chunk in function() return (stream:read()) end do into[#into + 1] = chunk end
  end
  local function work()
    return require("loom.group")(function(g)
      g:spawn(drain, p.stdout, out)
      g:spawn(drain, p.stderr, errout)
      if spec.input then
        g:spawn(function()
          local stdin <close> = p.stdin
          stdin:write(spec.input)
        end)
      end
      return p:wait()
    end)
  end
  local status, signame
  if spec.timeout then
    local ok, a, b = core.timeout(spec.timeout, work)
    if not ok then
      p:kill("SIGKILL")
      p:wait()
      if p.stdin then p.stdin:abort() end
      return nil, ("%s: timeout"):format(argv[1]), "ETIMEDOUT"
    end
    status, signame = a, b
  else
    status, signame = work()
  end
  local output = table.concat(out)
  if status == nil then return output, nil, signame end
  if p.stderr then return output, status, table.concat(errout) end
  return output, status
end

--- Waits for the first of the named signals; while it waits they lose their
-- default effect. Blocks.
-- @function signal.wait
-- @param ... names: "SIGINT", "SIGTERM", "SIGHUP" ...
-- @treturn string the name of the signal that arrived
-- @usage local sig = loom.signal.wait("SIGINT", "SIGTERM"); server:close()
signal.wait = core._signal_wait

--- Watches signals from now until closed: while the watcher is open they
-- never have their default effect, and those that arrive while no task
-- waits are kept, in order, for the next `wait` (so none is lost between
-- two waits, as can happen between two `signal.wait` calls). Also
-- `<close>`. Never blocks.
-- @function signal.watch
-- @param ... up to eight names: "SIGHUP", "SIGTERM" ...
-- @return a SignalWatch (`wait()`: the next one's name, blocks; `close()`),
-- or nil, msg, code
-- @usage local hup <close> = loom.signal.watch("SIGHUP")
-- while hup:wait() do reload_config() end
signal.watch = core._signal_watch

return { process = process, signal = signal }
