-- A small web app on one loom server: a static page (examples/web_app/),
-- a JSON API on the router, and live updates by server-sent events.
--
--   lua5.4 examples/web_app.lua 8080     then open http://localhost:8080/
--
-- Run without a port, it demonstrates itself: it serves on a free port,
-- loads the page, follows the event stream as a browser would, posts three
-- messages through the API and prints what the stream delivered.
local loom = require "loom"

local dir = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/web_app"
local messages, listeners = {}, {}

local app = loom.http.router()
app:errors(function(_, status, message) return status, {}, { error = message } end)

app:get("/api/messages", function() return { messages = messages } end)

app:post("/api/messages", function(req)
  local m = req:json()
  if type(m) ~= "table" or type(m.text) ~= "string" or m.text == "" then
    loom.http.error(400, "a message needs a text")
  end
  local msg = { id = #messages + 1, text = m.text }
  messages[#messages + 1] = msg
  for q in pairs(listeners) do q:put_nowait(msg) end -- a slow listener's full queue drops, never blocks us
  return 201, {}, msg
end)

-- each listener gets its own queue; the handler is cancelled when its client goes
app:get("/api/events", function(_, res)
  local q = loom.queue(100)
  listeners[q] = true
  local _ <close> = setmetatable({}, { __close = function() listeners[q] = nil end })
  local events = assert(res:sse())
  for msg in q:items() do
    if not events:send({ id = msg.id, data = require("cjson").encode(msg) }) then break end
  end
end)

app:get("/*path", loom.http.static(dir))

loom.run(function()
  local server = assert(loom.http.serve("127.0.0.1", tonumber(arg[1]) or 0, app))
  local base = ("http://127.0.0.1:%d"):format(select(2, server:address()))
  if arg[1] then -- serve until ^C, then let the requests in flight finish
    print("open " .. base .. "/")
    loom.signal.wait("SIGINT", "SIGTERM")
    return server:close(5)
  end
  local page = assert(loom.http.get(base .. "/"))
  print(("GET / -> %d %s, %d bytes, title %q"):format(page.status, page.headers["content-type"], #page.body,
    page.body:match("<title>(.-)</title>")))
  -- follow the event stream, as the page's EventSource does
  local stream = assert(loom.http.request { url = base .. "/api/events", stream = true })
  local seen = {}
  local reader = loom.spawn(function()
    local buf = ""
    while #seen < 3 do
      local chunk = stream:read()
      if not chunk then break end
      buf = buf .. chunk
      for event in function() local e, rest = buf:match("^(.-)\n\n(.*)$"); if e then buf = rest end return e end do
        local data = event:match("data: ([^\n]*)")
        if data then seen[#seen + 1] = data end
      end
    end
  end)
  loom.sleep(0.05) -- the stream is open before the first post
  for _, text in ipairs({ "hello", "anyone here?", "bye" }) do
    local r = assert(loom.http.request { method = "POST", url = base .. "/api/messages",
      headers = { ["Content-Type"] = "application/json" }, body = ('{"text":"%s"}'):format(text) })
    print(("POST /api/messages %q -> %d %s"):format(text, r.status, r.body))
  end
  local bad = assert(loom.http.request { method = "POST", url = base .. "/api/messages",
    headers = { ["Content-Type"] = "application/json" }, body = '{"text":""}' })
  print(("POST /api/messages \"\" -> %d %s"):format(bad.status, bad.body))
  loom.timeout(2, reader.await, reader)
  for i, data in ipairs(seen) do print(("event %d: %s"):format(i, data)) end
  local list = assert(assert(loom.http.get(base .. "/api/messages")):json())
  print(("GET /api/messages -> %d messages"):format(#list.messages))
  stream:close()
  loom.http.close_idle()
  server:close(1)
end)
