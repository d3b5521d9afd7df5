-- A JSON API server with a few routes (an in-memory list of todos) on
-- loom.http.router, JSON through lua-cjson. Run without arguments, it starts
-- the server on a free port, talks to it with loom.http as a client would,
-- prints each exchange and stops; with a port (lua5.4 examples/json_api.lua
-- 8080) it serves until Ctrl-C:   curl -d '{"title":"milk"}' -H 'Content-Type: application/json' localhost:8080/todos
local loom = require "loom"

local todos, next_id = {}, 1
local JSON = { ["Content-Type"] = "application/json" }
local app = loom.http.router()

-- errors as JSON: 404s, 405s, and loom.http.error raised by a handler
app:errors(function(_, status, message) return status, {}, { error = message } end)

app:get("/todos", function()
  local list = {}
  for id = 1, next_id - 1 do list[#list + 1] = todos[id] end
  return { todos = list, count = #list } -- a table is sent as JSON
end)

app:post("/todos", function(req)
  local item = req:json() -- a 400 by itself for a body that is not JSON
  if type(item) ~= "table" or type(item.title) ~= "string" then
    loom.http.error(400, "expected a JSON object with a title")
  end
  local todo = { id = next_id, title = item.title, done = false }
  todos[next_id], next_id = todo, next_id + 1
  return 201, {}, todo
end)

local function find(req)
  local todo = todos[tonumber(req.params.id)]
  if not todo then loom.http.error(404, "no todo " .. req.params.id) end
  return todo
end

app:get("/todos/:id", find)
app:delete("/todos/:id", function(req)
  todos[find(req).id] = nil
  return 204
end)

loom.run(function()
  local port = tonumber(arg[1])
  local server = assert(loom.http.serve("127.0.0.1", port or 0, app))
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
