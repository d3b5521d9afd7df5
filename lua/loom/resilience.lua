--- Resilience combinators: `loom.retry` (attempts with exponential, jittered
-- back-off) and `loom.rate_limit` (a token bucket), usable around anything.
-- @module loom
local core = require "loom.core"
local argerror = require("loom.args").error

local resilience = {}

local function check_number(v, name, fname, min)
  if v ~= nil and (type(v) ~= "number" or v < min) then
    argerror(2, fname, ("%s must be a number >= %g"):format(name, min))
  end
end

-- The results of one attempt: ok (true: succeeded), then its results, or
-- the failure (raised = true: an error value; else msg, code).
local function attempt(fn)
  local r = table.pack(pcall(fn))
  if not r[1] then return false, true, r[2] end
  if r[2] == nil and r.n >= 3 and r[3] ~= nil then return false, false, r[3], r[4] end
  return true, table.unpack(r, 2, r.n)
end

--- Calls `fn()` until it succeeds. A failure is an error raised by `fn` or
-- the Lua idiom `nil, msg [, code]`; cancellation is never retried. Between
-- attempts it sleeps `backoff * 2^(k-1)` seconds (k the attempt that
-- failed), at most `max_backoff`, with jitter the delay drawn uniformly from
-- its upper half. Blocks.
-- @function retry
-- @tparam function fn called with no arguments
-- @tparam[opt] table opts `attempts` (3, at least 1), `backoff` (0.1 s),
-- `max_backoff` (5 s), `jitter` (true), `retry_on` (`function(err_or_msg,
-- code)`: true to retry that failure; default: every failure)
-- @return fn's results; after the last attempt its failure as it came: the
-- same error value raised again, or nil, msg, code
-- @usage local body = loom.retry(function() return fetch(url) end, { attempts = 5 })
function resilience.retry(fn, opts)
  if type(fn) ~= "function" then argerror(1, "retry", ("function expected, got %s"):format(type(fn))) end
  if opts ~= nil and type(opts) ~= "table" then argerror(2, "retry", ("table expected, got %s"):format(type(opts))) end
  opts = opts or {}
  local attempts = opts.attempts or 3
  if math.type(attempts) ~= "integer" or attempts < 1 then argerror(2, "retry", "attempts must be an integer >= 1") end
  check_number(opts.backoff, "backoff", "retry", 0)
  check_number(opts.max_backoff, "max_backoff", "retry", 0)
  if opts.retry_on ~= nil and type(opts.retry_on) ~= "function" then
    argerror(2, "retry", "retry_on must be a function")
  end
  local backoff, max_backoff = opts.backoff or 0.1, opts.max_backoff or 5
  local jitter, retry_on = opts.jitter ~= false, opts.retry_on
  for k = 1, attempts do
    local r = table.pack(attempt(fn))
    if r[1] then return table.unpack(r, 2, r.n) end
    local raised, e, code = r[2], r[3], r[4]
    if raised and core.is_cancelled(e) then error(e, 0) end
    if k == attempts or (retry_on and not retry_on(e, code)) then
      if raised then error(e, 0) end
      return nil, e, code
    end
    local delay = math.min(backoff * 2 ^ (k - 1), max_backoff)
    if jitter then delay = delay / 2 + math.random() * delay / 2 end
    core.sleep(delay)
  end
end

local Limiter = {}
Limiter.__index = Limiter

--- A token bucket, from `rate_limit`.
-- @type Limiter

--- Takes `n` tokens, waiting until there are that many. Tasks are served
-- first come, first served; a task cancelled while it waits takes nothing
-- and holds nobody up. Blocks.
-- @tparam[opt=1] number n at most the burst
-- @usage limiter:acquire(); send(request)
function Limiter:acquire(n)
  n = n or 1
  if type(n) ~= "number" or n <= 0 then argerror(1, "acquire", "token count must be a positive number") end
  if n > self._burst then argerror(1, "acquire", ("%g tokens asked of a bucket of %g"):format(n, self._burst)) end
  local _ <close> = self._turn:acquire() -- FIFO: the first waiter takes the tokens first
  while true do
    local now = core.now()
    self._tokens = math.min(self._burst, self._tokens + (now - self._at) * self._rate)
    self._at = now
    if self._tokens >= n - 1e-9 then break end -- (floating point: 0.1 s at 10/s is 1 token)
    core.sleep((n - self._tokens) / self._rate)
  end
  self._tokens = math.max(self._tokens - n, 0)
end

--- A token bucket refilled at `rate` tokens per second up to `burst`
-- (default: rate, at least 1); it starts full. Never blocks.
-- @function rate_limit
-- @tparam number rate tokens per second
-- @tparam[opt] number burst the bucket's size
-- @return a Limiter (`acquire([n])`)
-- @usage local limiter = loom.rate_limit(10) -- 10 requests a second
function resilience.rate_limit(rate, burst)
  if type(rate) ~= "number" or rate <= 0 or rate ~= rate then
    argerror(1, "rate_limit", "rate must be a positive number of tokens per second")
  end
  if burst ~= nil and (type(burst) ~= "number" or burst <= 0) then
    argerror(2, "rate_limit", "burst must be a positive number")
  end
  burst = burst or math.max(rate, 1)
  return setmetatable({ _rate = rate, _burst = burst, _tokens = burst, _at = core.now(),
                        _turn = core.lock() }, Limiter)
end

return resilience
