--- loom.http.router and what web handlers share: routing on a tree of
-- path segments compiled as routes are added (static segments found by a
-- table lookup, then `:param`, then `*wildcard`, so a request costs one
-- step per segment whatever the number of routes), middleware, mounted
-- sub-routers, automatic HEAD and OPTIONS, 404 and 405 with `Allow`; JSON in
-- and out (on lua-cjson, found at run time); and `loom.http.error`, the
-- error a handler raises to answer with a status.
-- @module loom.http
local args = require "loom.args"
local core = require "loom.core"

local router = {}
local argerror, check_type = args.error, args.type
local unescape = core._http_unescape
local byte, find, sub = string.byte, string.find, string.sub
local SLASH = byte("/")

-- HTTP errors.

local HttpError = { __name = "loom.http.error" }
HttpError.__index = HttpError
HttpError.__tostring = function(e) return ("HTTP %d: %s"):format(e.status, e.message) end

--- Raises an error that answers the request with `status` and `message`
-- (text/plain) instead of a 500; it is not logged. Raises.
-- @function error
-- @tparam integer status 400-599
-- @tparam[opt] string message the body (default: the status's reason)
-- @usage if not user then loom.http.error(404, "no such user") end
function router.error(status, message)
  if math.type(status) ~= "integer" or status < 400 or status > 599 then
    argerror(1, "error", "status must be an integer 400-599")
  end
  check_type(message, "string", 2, "error", true)
  error(setmetatable({ status = status, message = message or ("HTTP " .. status) }, HttpError), 2)
end

-- The status and message of a value raised by a handler, if it is an HTTP
-- error.
function router._answer_of(e)
  if getmetatable(e) == HttpError then return e.status, e.message end
end

-- JSON.

local cjson
local function json()
  if cjson == nil then
    local ok, mod = pcall(require, "cjson")
    if not ok then
      error("loom.http: JSON needs lua-cjson (Debian: apt install lua-cjson; or luarocks install lua-cjson)", 3)
    end
    cjson = mod
  end
  return cjson
end

-- Encodes a value as JSON (lua-cjson). Raises if lua-cjson is missing or
-- the value cannot be encoded.
function router._encode(v)
  return json().encode(v)
end

-- Decodes JSON (lua-cjson: nesting bounded at 1,000 levels). Raises.
function router._decode(s)
  return json().decode(s)
end

--- The request body decoded from JSON. Blocks (reads the body, bounded by
-- the server's max_body_size). A body that is not JSON, or a Content-Type
-- other than `application/json` (or `+json`), answers 400 with the reason.
-- @function Request:json
-- @return the decoded value
-- @usage local user = req:json(); return 201, {}, { id = save(user) }
function router.request_json(req)
  local ctype = (req.headers["content-type"] or ""):lower():match("^%s*([^;%s]+)")
  if ctype ~= "application/json" and not (ctype and ctype:match("^application/[%w.%-]+%+json$")) then
    router.error(400, ("expected a JSON body (Content-Type: application/json), got %s"):format(
      ctype and ("'" .. ctype .. "'") or "none"))
  end
  local body, err, _, status = req:body()
  if not body then
    if status then error(err, 0) end -- too large or cut: the body's own status answers
    router.error(400, "cannot read the body: " .. tostring(err))
  end
  local decode = json().decode
  local ok, v = pcall(decode, body)
  if not ok then router.error(400, "invalid JSON: " .. tostring(v):gsub("^.-:%d+: ", "")) end
  return v
end

-- The router.

local Router = { __name = "loom.http.router" }
Router.__index = Router

--- A router, from `loom.http.router()`: give it to `loom.http.serve` as the
-- handler.
-- @type Router

local function new_node()
  return { static = {} }
end

-- Requests are matched on the raw path itself, a segment at a time (no
-- table of segments per request); `plain` says it has no percent-escape,
-- otherwise each segment is decoded as it is cut (an encoded slash stays
-- inside its segment). Empty segments (`//`, a trailing `/`) are skipped.

-- The first segment of path at or after i: the segment (decoded), the
-- index after it; nil at the end.
local function next_segment(path, i, plain)
  while byte(path, i) == SLASH do i = i + 1 end
  if i > #path then return nil end
  local j = find(path, "/", i, true) or #path + 1
  local seg = sub(path, i, j - 1)
  return plain and seg or unescape(seg, false), j
end

-- The segments of path from i joined by single slashes (a wildcard's value).
local function rest_of(path, i, plain)
  local rest = sub(path, i)
  while byte(rest, 1) == SLASH do rest = sub(rest, 2) end
  if plain and not find(rest, "//", 1, true) and byte(rest, -1) ~= SLASH then return rest end
  local segs = {}
  for seg in rest:gmatch("[^/]+") do segs[#segs + 1] = plain and seg or unescape(seg, false) end
  return table.concat(segs, "/")
end

local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true, HEAD = true,
                  OPTIONS = true, ["*"] = true }

-- Adds handler h for method on pattern.
local function add(self, method, pattern, h, fname)
  if type(pattern) ~= "string" or pattern:sub(1, 1) ~= "/" then
    argerror(1, fname, "pattern must be a path starting with '/'")
  end
  if type(h) ~= "function" and not (type(h) == "table" and getmetatable(h) and getmetatable(h).__call) then
    argerror(2, fname, ("handler expected, got %s"):format(type(h)))
  end
  local node, names = self._root, {}
  local parts = {}
  for seg in pattern:gmatch("[^/]+") do parts[#parts + 1] = seg end
  for i, seg in ipairs(parts) do
    local kind, name = seg:sub(1, 1), seg:sub(2)
    if kind == ":" or kind == "*" then
      if name == "" or not name:match("^[%a_][%w_]*$") then
        argerror(1, fname, ("bad parameter name in '%s'"):format(pattern))
      end
      if names[name] then argerror(1, fname, ("parameter '%s' twice in '%s'"):format(name, pattern)) end
      names[name] = true
    end
    if kind == ":" then
      if node.param and node.param.name ~= name then
        argerror(1, fname, ("'%s': parameter ':%s' where another route has ':%s'"):format(pattern, name, node.param.name))
      end
      node.param = node.param or { static = {}, name = name }
      node = node.param
    elseif kind == "*" then
      if i ~= #parts then argerror(1, fname, ("'%s': a wildcard must be the last segment"):format(pattern)) end
      if node.wild and node.wild.name ~= name then
        argerror(1, fname, ("'%s': wildcard '*%s' where another route has '*%s'"):format(pattern, name, node.wild.name))
      end
      node.wild = node.wild or { static = {}, name = name }
      node = node.wild
    else
      local key = unescape(seg, false)
      node.static[key] = node.static[key] or new_node()
      node = node.static[key]
    end
  end
  node.methods = node.methods or {}
  if node.methods[method] then argerror(1, fname, ("%s %s is routed twice"):format(method, pattern)) end
  node.methods[method] = h
  return self
end

-- The node for path from i below node, filling params; static first, then
-- the parameter, then the wildcard (which takes the rest, possibly nothing;
-- the second result is where the rest starts, for a mounted router).
local function match(node, path, i, plain, params)
  local seg, j = next_segment(path, i, plain)
  if not seg then
    if node.methods then return node end
    if node.wild and node.wild.methods then
      params[node.wild.name] = ""
      return node.wild, i
    end
    return nil
  end
  local child = node.static[seg]
  if child then
    local found, at = match(child, path, j, plain, params)
    if found then return found, at end
  end
  local param = node.param
  if param then
    local found, at = match(param, path, j, plain, params)
    if found then
      params[param.name] = seg
      return found, at
    end
  end
  local wild = node.wild
  if wild and wild.methods then
    params[wild.name] = rest_of(path, i, plain)
    return wild, i
  end
  return nil
end

local function allow_of(methods)
  local list, seen = {}, {}
  for m in pairs(methods) do
    if m ~= "*" then list[#list + 1] = m; seen[m] = true end
  end
  if seen.GET and not seen.HEAD then list[#list + 1] = "HEAD" end
  if not seen.OPTIONS then list[#list + 1] = "OPTIONS" end
  table.sort(list)
  return table.concat(list, ", ")
end

local PLAIN = { ["Content-Type"] = "text/plain; charset=utf-8" }

-- The answer for an error status: the router's `errors` function's, or
-- plain text.
local function error_answer(self, req, status, message, headers)
  local errors = self._errors
  if not errors then
    local h = { ["Content-Type"] = PLAIN["Content-Type"] }
    for k, v in pairs(headers or {}) do h[k] = v end
    return status, h, message .. "\n"
  end
  local s, h, b = errors(req, status, message)
  if math.type(s) ~= "integer" then s, h, b = status, nil, s end
  if headers then
    h = h or {}
    for k, v in pairs(headers) do h[k] = v end
  end
  return s, h, b
end
router._error_answer = error_answer

-- Answers req with this router's routes, for the path from i.
local function dispatch(self, req, res, path, i, plain)
  local params = {}
  local node, at = match(self._root, path, i, plain, params)
  if not node then return error_answer(self, req, 404, "not found") end
  local methods, method = node.methods, req.method
  local h = methods[method] or (method == "HEAD" and methods.GET) or methods["*"]
  if not h then
    if method == "OPTIONS" then return 204, { Allow = allow_of(methods) } end
    return error_answer(self, req, 405, "method not allowed", { Allow = allow_of(methods) })
  end
  local p = rawget(req, "params")
  if p then -- a mounted router's parameters join its parent's
    for k, v in pairs(params) do p[k] = v end
  else
    req.params = params
  end
  if node.mounted then
    req.params.__mount = nil
    return h:_handle(req, res, path, at, plain)
  end
  return h(req, res)
end

local JSON_HEADERS = { ["Content-Type"] = "application/json" }

-- A table returned alone is encoded here, so that the answer takes the
-- server's C path (status, headers, string) rather than its Lua one (which
-- only reads the shared headers: the handler has returned).
local function encoded(a, b, c, ...)
  if type(a) == "table" and b == nil and select("#", ...) == 0 then return 200, JSON_HEADERS, router._encode(a) end
  return a, b, c, ...
end

-- A handler's answer in the form middleware sees: status, headers, body
-- (a body alone, a table alone or nothing become a 200).
local function normalize(a, b, c)
  if math.type(a) == "integer" then return a, b, c end
  if a == nil or type(a) == "string" or type(a) == "table" then return 200, nil, a end
  return a, b, c -- a wrong answer: the server reports it
end

-- Runs the middleware in order around the dispatch of path from i.
function Router:_handle(req, res, path, i, plain)
  local mw = self._mw
  if #mw == 0 then return dispatch(self, req, res, path, i, plain) end
  local k = 0
  local function nxt()
    k = k + 1
    local m = mw[k]
    if m then return m(req, res, nxt) end
    return normalize(dispatch(self, req, res, path, i, plain))
  end
  return nxt()
end

--- Answers a request (a router is a handler: `loom.http.serve(host, port,
-- app)`). May block (as its handlers do).
function Router:__call(req, res)
  local path, target = req.path, req.target
  if path ~= target then -- (equal: no query, nothing escaped)
    path = target:match("^[^?#]*")
    return encoded(self:_handle(req, res, path, 1, not find(path, "%", 1, true)))
  end
  return encoded(self:_handle(req, res, path, 1, true))
end

--- Routes `method` requests for `pattern` to `handler(req, res)`.
-- Patterns are paths whose segments may be `:name` (one segment, in
-- `req.params.name`) or, last, `*name` (the rest of the path, possibly
-- empty). Static segments win over parameters, parameters over wildcards.
-- A GET route answers HEAD too; OPTIONS is answered with `Allow`; a path
-- with routes for other methods gets 405 with `Allow`, one without any
-- route 404. Never blocks.
-- @tparam string method "GET", "POST" ... or "*" (any)
-- @tparam string pattern
-- @tparam function handler as `loom.http.serve`'s
-- @treturn Router the router, for chaining
-- @usage app:route("GET", "/users/:id", function(req) return find(req.params.id) end)
function Router:route(method, pattern, handler)
  if type(method) ~= "string" or not METHODS[method:upper()] then
    argerror(1, "route", "method must be GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or '*'")
  end
  return add(self, method:upper(), pattern, handler, "route")
end

for _, m in ipairs({ "get", "post", "put", "patch", "delete" }) do
  Router[m] = function(self, pattern, handler) return add(self, m:upper(), pattern, handler, m) end
end

--- Adds a middleware: `fn(req, res, next)` runs around every request this
-- router answers (in the order added), 404s and 405s included; `next()`
-- runs the rest and returns its answer as `status, headers, body`
-- (headers may be nil; a handler's body alone or table alone comes as
-- `200, nil, body`), which the middleware returns, changes or replaces.
-- Never blocks.
-- @tparam function fn
-- @treturn Router
-- @usage app:use(function(req, res, next)
--   if req.headers.authorization ~= TOKEN then return 401, {}, "no\n" end
--   return next()
-- end)
function Router:use(fn)
  check_type(fn, "function", 1, "use")
  self._mw[#self._mw + 1] = fn
  return self
end

--- Sets how errors are answered: `fn(req, status, message)` returns the
-- answer (as a handler does: `status, headers, body`, a string, or a table
-- for JSON) for the router's 404s and 405s (its `Allow` kept) and, on the
-- router given to `loom.http.serve`, for `loom.http.error` raised by any
-- handler (and `req:json()`'s 400s). Without it they are plain text.
-- Never blocks.
-- @tparam function fn
-- @treturn Router
-- @usage app:errors(function(req, status, message) return status, {}, { error = message } end)
function Router:errors(fn)
  check_type(fn, "function", 1, "errors")
  self._errors = fn
  return self
end

--- Mounts another router under a path prefix: its routes answer the paths
-- below `prefix` (its patterns written without the prefix), its
-- middleware runs after this router's. Never blocks.
-- @tparam string prefix such as "/api"
-- @tparam Router sub
-- @treturn Router
-- @usage app:mount("/api/v1", api)
function Router:mount(prefix, sub)
  if type(prefix) ~= "string" or not prefix:match("^/.") or prefix:sub(-1) == "/" or prefix:find("[:*]") then
    argerror(1, "mount", "prefix must be a plain path such as '/api' (no parameter, no trailing slash)")
  end
  if getmetatable(sub) ~= Router then argerror(2, "mount", "router expected") end
  add(self, "*", prefix .. "/*__mount", sub, "mount")
  -- the wildcard's node hands the path after the prefix to sub
  local node = self._root
  for seg in prefix:gmatch("[^/]+") do node = node.static[unescape(seg, false)] end
  node.wild.mounted = true
  return self
end

--- A middleware writing one line per request in the Common Log Format
-- (`127.0.0.1 - - [04/Dec/2026:10:00:00 +0000] "GET /x HTTP/1.1" 200 5`;
-- the size is "-" when the body is streamed or sent as JSON). Never blocks
-- (the line is written as it is).
-- @function access_log
-- @param[opt] out a file (default io.stdout) or a function given each line
-- @treturn function the middleware, for `app:use`
-- @usage app:use(loom.http.access_log())
function router.access_log(out)
  out = out or io.stdout
  local write
  if type(out) == "function" then
    write = out
  elseif io.type(out) == "file" then
    write = function(line)
      out:write(line, "\n")
      out:flush()
    end
  else
    argerror(1, "access_log", "a file or a function expected")
  end
  return function(req, _, next)
    local status, size = nil, "-"
    -- logged however the request ends: an error is its 500 (or
    -- loom.http.error's status), a client gone nginx's 499
    local _ <close> = setmetatable({}, { __close = function(_, err)
      if err ~= nil then
        status = getmetatable(err) == HttpError and err.status or core.is_cancelled(err) and 499 or 500
      end
      write(('%s - - [%s] "%s %s HTTP/%s" %s %s'):format(req.remote or "-", os.date("%d/%b/%Y:%H:%M:%S %z"),
        req.method, req.target, req.version, tostring(status), size))
    end })
    local headers, body
    status, headers, body = next()
    size = type(body) == "string" and tostring(#body) or (body == nil and "0" or "-")
    return status, headers, body
  end
end

--- A new router. Never blocks.
-- @function router
-- @treturn Router
-- @usage local app = loom.http.router()
-- app:get("/users/:id", function(req) return { id = req.params.id } end)
-- loom.http.serve("0.0.0.0", 8080, app)
function router.new()
  return setmetatable({ _root = new_node(), _mw = {} }, Router)
end

router.Router = Router

return router
