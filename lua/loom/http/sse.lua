--- Server-sent events (the WHATWG `text/event-stream` format) on a
-- response: `res:sse()` gives an event stream whose `send` blocks under
-- backpressure, with keep-alive comments while it is idle.
-- @module loom.http
local core = require "loom.core"
local args = require "loom.args"

local sse = {}
local argerror, check_type = args.error, args.type

local EventStream = { __name = "loom.http.EventStream" }
EventStream.__index = EventStream

--- An event stream, from `res:sse()`.
-- @type EventStream

-- A field's value may not hold a line break (it would end the field).
local function single_line(v, name)
  v = tostring(v)
  if v:find("[\r\n]") then argerror(1, "send", name .. " must be a single line") end
  return v
end

--- Sends one event: `data` (a string; each of its lines becomes a `data:`
-- line, so multi-line data arrives whole), with optional `event` (its
-- type), `id` (the client's Last-Event-ID on reconnection) and `retry`
-- (the reconnection delay, in milliseconds). A string alone is the data.
-- Blocks while the client is slow to read (backpressure).
-- @param ev a string, or a table `{data =, event =, id =, retry =}`
-- @return true, or nil, msg, code once the client has gone
-- @usage events:send{ event = "price", data = cjson.encode(tick), id = tick.seq }
function EventStream:send(ev)
  if type(ev) == "string" then ev = { data = ev } end
  check_type(ev, "table", 1, "send")
  local out = {}
  if ev.event ~= nil then out[#out + 1] = "event: " .. single_line(ev.event, "event") .. "\n" end
  if ev.id ~= nil then out[#out + 1] = "id: " .. single_line(ev.id, "id") .. "\n" end
  if ev.retry ~= nil then
    if math.type(ev.retry) ~= "integer" or ev.retry < 0 then argerror(1, "send", "retry must be milliseconds") end
    out[#out + 1] = ("retry: %d\n"):format(ev.retry)
  end
  local data = ev.data == nil and "" or tostring(ev.data)
  for line in (data .. "\n"):gmatch("([^\n]*)\r?\n") do out[#out + 1] = "data: " .. line .. "\n" end
  out[#out + 1] = "\n"
  return self:_put(table.concat(out))
end

--- Sends a comment line (ignored by clients; keeps proxies from closing an
-- idle connection). Blocks as `send` does.
-- @tparam[opt] string text
-- @return true, or nil, msg, code
function EventStream:comment(text)
  check_type(text, "string", 1, "comment", true)
  return self:_put(": " .. (text or ""):gsub("[\r\n]", " ") .. "\n")
end

function EventStream:_put(s)
  if self._closed then return nil, "closed", "ECLOSED" end
  self._last = core.now()
  local ok, err, code = self._res:write(s)
  if not ok then self._closed = true end
  return ok, err, code
end

-- Stops the keep-alive comments (the response is ending).
function EventStream:_stop()
  self._closed = true
  if self._keeper then self._keeper:cancel() end
end

--- Ends the stream (the response's last chunk). Blocks as `send` does.
function EventStream:close()
  if self._closed then return end
  self._res:finish() -- stops the keep-alive comments too
end

-- res:sse(opts) (documented at Response:sse in lua/loom/http/server.lua).
function sse.start(res, opts)
  check_type(opts, "table", 1, "sse", true)
  local keepalive = 15
  if opts and opts.keepalive ~= nil then keepalive = opts.keepalive end
  if keepalive ~= false and (type(keepalive) ~= "number" or keepalive <= 0) then
    argerror(1, "sse", "keepalive must be a number of seconds or false")
  end
  res:header("Content-Type", "text/event-stream")
  res:header("Cache-Control", "no-cache")
  res:header("X-Accel-Buffering", "no") -- nginx in front: do not buffer the stream
  local ok, err, code = res:write("")
  if not ok then return nil, err, code end
  local es = setmetatable({ _res = res, _last = core.now() }, EventStream)
  res._sse = es
  if keepalive then
    es._keeper = core.spawn(function()
      while not es._closed do
        local idle = core.now() - es._last
        if idle >= keepalive then
          if not es:comment("keepalive") then return end
        else
          core.sleep(keepalive - idle)
        end
      end
    end)
    es._keeper.name = "sse keepalive"
  end
  return es
end

return sse
