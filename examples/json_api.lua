-- A JSON API server with a few routes (an in-memory list of todos), using
-- Debian's lua-cjson for JSON. Run without arguments, it starts the server on
-- a free port, talks to it with loom.http as a client would, prints each
-- exchange and stops; with a port (lua5.4 examples/json_api.lua 8080) it
-- serves until Ctrl-C:   curl -d '{"title":"milk"}' localhost:8080/todos
local loom = require "loom"
local json = require "cjson"

local todos, next_id = {}, 1
local JSON = { ["Content-Type"] = "application/json" }

local function reply(status, value)
  return status, JSON, json.encode(value)
end

-- Routes: method and a path pattern; captures are passed to the handler.
local routes = {
  { "GET", "^/todos$", function()
    local list = {}
    for id = 1, next_id - 1 do list[#list + 1] = todos[id] end
    return reply(200, { todos = list, count = #list })
  end },
  { "POST", "^/todos$", function(req)
    local body, err, _, status = req:body()
    if not body then return reply(status or 400, { error = err }) end
    local ok, item = pcall(json.decode, body)
    if not ok or type(item) ~= "table" or type(item.title) ~= "string" then
      return reply(400, { error = "expected a JSON object with a title" })
    end
    local todo = { id = next_id, title = item.title, done = false }
    todos[next_id], next_id = todo, next_id + 1
    return reply(201, todo)
  end },
  { "GET", "^/todos/(%d+)$", function(_, id)
    local todo = todos[tonumber(id)]
    if not todo then return reply(404, { error = "no todo " .. id }) end
    return reply(200, todo)
  end },
  { "DELETE", "^/todos/(%d+)$", function(_, id)
    if not todos[tonumber(id)] then return reply(404, { error = "no todo " .. id }) end
    todos[tonumber(id)] = nil
    return 204, {}, ""
  end },
}

local function handler(req)
  for _, r in ipairs(routes) do
    if req.method == r[1] then
      local captures = { req.path:match(r[2]) }
      if captures[1] then return r[3](req, table.unpack(captures)) end
    end
  end
  return reply(404, { error = "no route for " .. req.method .. " " .. req.path })
end

loom.run(function()
  local port = tonumber(arg[1])
  local server = assert(loom.http.serve("127.0.0.1", port or 0, handler))
  local _, bound = server:address()
  local base = "http://127.0.0.1:" .. bound
  if port then
    print("serving on " .. base)
    loom.signal.wait("SIGINT", "SIGTERM")
    server:close()
    return
  end
  local function show(method, path, body)
    local res = assert(loom.http.request { method = method, url = base .. path, body = body,
                                           headers = body and JSON })
    print(("%-6s %-9s -> %d %s"):format(method, path, res.status, res.body))
  end
  show("POST", "/todos", '{"title":"buy milk"}')
  show("POST", "/todos", '{"title":"write docs"}')
  show("POST", "/todos", "not json")
  show("GET", "/todos")
  show("DELETE", "/todos/1")
  show("GET", "/todos/1")
  show("GET", "/todos/2")
  show("GET", "/nowhere")
  loom.http.close_idle()
  server:close()
end)
