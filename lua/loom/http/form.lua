--- Forms: `req:form()` for `application/x-www-form-urlencoded` and
-- `multipart/form-data` bodies, the multipart body parsed as it streams in
-- (files to memory or to a directory), with limits per part, on the number
-- of parts, and in total (the server's max_body_size).
-- @module loom.http
local args = require "loom.args"
local common = require "loom.http.common"
local router = require "loom.http.router"

local form = {}
local argerror, check_type = args.error, args.type
local find, sub = string.find, string.sub

local function bad(msg) router.error(400, msg) end

-- A header's parameters ('form-data; name="a"; filename="b.txt"').
local function params_of(value)
  local p = {}
  for k, v in value:gmatch(';%s*([%w%-_*]+)%s*=%s*("[^"]*"?)') do p[k:lower()] = v:sub(2, -2) end
  for k, v in value:gmatch(';%s*([%w%-_*]+)%s*=%s*([^";%s][^;]*)') do
    if p[k:lower()] == nil then p[k:lower()] = v:match("^(.-)%s*$") end
  end
  return p
end

local function check_limit(opts, name, default, fname)
  local v = opts[name]
  if v == nil then return default end
  if math.type(v) ~= "integer" or v < 0 then argerror(1, fname, name .. " must be a number of bytes") end
  return v
end

-- A part being received: where its bytes go.
local function open_part(state, headers)
  local disp = headers["content-disposition"]
  if not disp or not disp:lower():match("^%s*form%-data") then bad("a part without Content-Disposition: form-data") end
  local p = params_of(disp)
  if not p.name then bad("a part without a name") end
  state.nparts = state.nparts + 1
  if state.nparts > state.max_parts then router.error(413, ("more than %d parts"):format(state.max_parts)) end
  local part = { name = p.name, size = 0 }
  if p.filename then
    part.filename = p.filename:match("[^/\\]*$") -- a client's path is not ours to use
    part.content_type = headers["content-type"] or "application/octet-stream"
    part.limit = state.max_file_size
    if state.dir then
      state.seq = state.seq + 1
      part.path = ("%s/upload-%d-%d"):format(state.dir, os.time(), state.seq)
      part.file = assert(require("loom.fs").open(part.path, "w"))
      state.paths[#state.paths + 1] = part.path
      state.open = part.file
    else
      part.chunks = {}
    end
  else
    part.limit, part.chunks = state.max_field_size, {}
  end
  return part
end

local function feed(part, data)
  if data == "" then return end
  part.size = part.size + #data
  if part.size > part.limit then
    router.error(413, ("part '%s' is larger than %d bytes"):format(part.name, part.limit))
  end
  if part.file then
    assert(part.file:write(data))
  else
    part.chunks[#part.chunks + 1] = data
  end
end

local function close_part(state, part)
  if part.file then
    part.file:close()
    part.file, state.open = nil, nil
  elseif part.filename then
    part.data, part.chunks = table.concat(part.chunks), nil
  else
    state.fields[part.name] = table.concat(part.chunks)
    return
  end
  part.limit = nil
  state.files[#state.files + 1] = part
  if state.files[part.name] == nil then state.files[part.name] = part end
end

-- Parses a multipart body from req:read() chunks.
local function multipart(req, boundary, state)
  local delim = "\r\n--" .. boundary
  local buf, mode, part = "\r\n", "preamble", nil -- the first delimiter has no CRLF before it
  local ended = false
  while true do
    local progressed = true
    while progressed do
      progressed = false
      if mode == "preamble" or mode == "body" then
        local at = find(buf, delim, 1, true)
        if at then
          if part then feed(part, sub(buf, 1, at - 1)); close_part(state, part); part = nil end
          buf, mode, progressed = sub(buf, at + #delim), "after", true
        elseif part then -- all but what could be the start of a delimiter
          local keep = #delim - 1
          if #buf > keep then
            feed(part, sub(buf, 1, #buf - keep))
            buf = sub(buf, #buf - keep + 1)
          end
        elseif #buf > #delim then
          buf = sub(buf, #buf - #delim + 1)
        end
      elseif mode == "after" then
        if #buf >= 2 then
          local two = sub(buf, 1, 2)
          if two == "--" then return end -- the closing delimiter: the epilogue is ignored
          local eol = find(buf, "\r\n", 1, true)
          if not eol then
            if #buf > 256 then bad("a malformed multipart delimiter line") end
          else
            if sub(buf, 1, eol - 1):match("%S") then bad("a malformed multipart delimiter line") end
            buf, mode, progressed = sub(buf, eol + 2), "headers", true
          end
        end
      elseif mode == "headers" then
        local stop = find(buf, "\r\n\r\n", 1, true)
        local head
        if sub(buf, 1, 2) == "\r\n" then -- a part without headers
          head, buf = "", sub(buf, 3)
        elseif stop then
          head, buf = sub(buf, 1, stop - 1), sub(buf, stop + 4)
        elseif #buf > 16 * 1024 then
          bad("a part's headers are too large")
        end
        if head then
          local headers = {}
          for line in (head .. "\r\n"):gmatch("(.-)\r\n") do
            local k, v = line:match("^([^:]+):%s*(.-)%s*$")
            if not k then bad("a malformed part header") end
            headers[k:lower()] = v
          end
          part, mode, progressed = open_part(state, headers), "body", true
        end
      end
    end
    if ended then bad("the multipart body ended before its closing delimiter") end
    local chunk, err, code, status = req:read()
    if chunk then
      buf = buf .. chunk
    elseif err then
      if status then error(err, 0) end
      bad("cannot read the body: " .. tostring(err))
    else
      ended = true
    end
  end
end

--- The request's form: for `application/x-www-form-urlencoded`, the
-- fields (a repeated name keeps the last value); for
-- `multipart/form-data`, the fields and the files, the body parsed as it
-- arrives: each file part is kept in memory (`data`) or, with `dir`,
-- written there (`path`, the file's own name never used as a path).
-- Blocks. Anything else, or a malformed body, answers 400; a part over its
-- limit or too many parts 413; the whole body is bounded by the server's
-- max_body_size (413).
-- @function Request:form
-- @tparam[opt] table opts `dir` (a directory for uploaded files; default:
-- memory), `max_file_size` (10 MiB), `max_field_size` (64 KiB),
-- `max_parts` (100)
-- @return fields (name -> string), files (a list, and name -> the first
-- file of that name: `{name, filename, content_type, size, data | path}`)
-- @usage local fields, files = req:form{ dir = "/srv/uploads" }
-- print(fields.title, files.photo.filename, files.photo.path)
function form.request_form(req, opts)
  check_type(opts, "table", 1, "form", true)
  opts = opts or {}
  if opts.dir ~= nil and type(opts.dir) ~= "string" then argerror(1, "form", "dir must be a directory path") end
  local ctype = req.headers["content-type"] or ""
  local mime = ctype:lower():match("^%s*([^;%s]+)")
  if mime == "application/x-www-form-urlencoded" then
    local body, err, _, status = req:body()
    if not body then
      if status then error(err, 0) end
      bad("cannot read the body: " .. tostring(err))
    end
    return common.decode_query(body), {}
  elseif mime ~= "multipart/form-data" then
    bad(("expected a form (application/x-www-form-urlencoded or multipart/form-data), got %s")
      :format(mime and ("'" .. mime .. "'") or "none"))
  end
  local boundary = params_of(ctype).boundary
  if not boundary or #boundary == 0 or #boundary > 70 then bad("multipart/form-data without a valid boundary") end
  local state = { fields = {}, files = {}, nparts = 0, seq = 0, paths = {}, dir = opts.dir,
                  max_file_size = check_limit(opts, "max_file_size", 10 * 1024 * 1024, "form"),
                  max_field_size = check_limit(opts, "max_field_size", 64 * 1024, "form"),
                  max_parts = check_limit(opts, "max_parts", 100, "form") }
  local ok, e = pcall(multipart, req, boundary, state)
  if not ok then -- files written are removed: the form was not taken
    if state.open then state.open:close() end
    local fs = require "loom.fs"
    for _, path in ipairs(state.paths) do fs.remove(path) end
    error(e, 0)
  end
  return state.fields, state.files
end

return form
