-- loom's side of bench/web.sh: usage web_loom.lua PORT MODE [DIR]
--   json:   GET /users/:id through loom.http.router, a small JSON object
--   hello:  the plain hello world (loom.http.serve, no router)
--   static: loom.http.static(DIR)
local loom = require "loom"
local port, mode, dir = tonumber(arg[1]), arg[2], arg[3]
loom.run(function()
  local handler
  if mode == "json" then
    local app = loom.http.router()
    app:get("/users/:id", function(req) return { id = tonumber(req.params.id), name = "user " .. req.params.id } end)
    handler = app
  elseif mode == "static" then
    handler = loom.http.static(dir)
  else
    local headers = { ["Content-Type"] = "text/plain" }
    handler = function(_req) return 200, headers, "Hello, World!" end
  end
  assert(loom.http.serve("127.0.0.1", port, handler, { backlog = 1024 }))
  loom.sleep(1e9)
end)
