--- loom.http.static: a handler serving the files of a directory: bodies
-- sent by sendfile(2) from the page cache (copied only under TLS),
-- Content-Type by extension, ETag and Last-Modified with 304s, single byte
-- ranges (206, 416), and no way out of the directory.
-- @module loom.http
local fs = require "loom.fs"
local core = require "loom.core"
local args = require "loom.args"
local router = require "loom.http.router"

local static = {}
local argerror, check_type = args.error, args.type

local TYPES = {
  html = "text/html; charset=utf-8", htm = "text/html; charset=utf-8", css = "text/css; charset=utf-8",
  js = "text/javascript; charset=utf-8", mjs = "text/javascript; charset=utf-8",
  json = "application/json", txt = "text/plain; charset=utf-8", md = "text/markdown; charset=utf-8",
  csv = "text/csv; charset=utf-8", xml = "application/xml", svg = "image/svg+xml", png = "image/png",
  jpg = "image/jpeg", jpeg = "image/jpeg", gif = "image/gif", webp = "image/webp", avif = "image/avif",
  ico = "image/x-icon", woff = "font/woff", woff2 = "font/woff2", ttf = "font/ttf", otf = "font/otf",
  pdf = "application/pdf", zip = "application/zip", gz = "application/gzip", wasm = "application/wasm",
  mp4 = "video/mp4", webm = "video/webm", mp3 = "audio/mpeg", ogg = "audio/ogg", wav = "audio/wav",
  map = "application/json",
}

local CACHE_MAX = 256 -- files kept open at most

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10,
                 Nov = 11, Dec = 12 }

local function http_date(t)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", t)
end

-- Seconds since the epoch of an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37
-- GMT"), or nil.
local function parse_date(s)
  local d, mon, y, h, mi, sec = (s or ""):match("^%a+, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not d or not MONTHS[mon] then return nil end
  -- os.time reads a local time: correct by the zone's offset at that date
  local t = { year = tonumber(y), month = MONTHS[mon], day = tonumber(d), hour = tonumber(h), min = tonumber(mi),
              sec = tonumber(sec), isdst = false }
  local localt = os.time(t)
  local utc = os.time(os.date("!*t", localt))
  return localt + (localt - utc)
end

-- The single byte range asked for, against a file of size bytes: first,
-- last; or false when it cannot be satisfied; or nil to send it all (no
-- Range, one not in bytes, or several ranges).
local function byte_range(header, size)
  if not header then return nil end
  local spec = header:match("^%s*bytes%s*=%s*(.-)%s*$")
  if not spec or spec:find(",", 1, true) then return nil end
  local a, b = spec:match("^(%d*)%-(%d*)$")
  if not a or (a == "" and b == "") then return nil end
  if a == "" then -- the last b bytes
    local n = tonumber(b)
    if n == 0 or size == 0 then return false end
    return math.max(size - n, 0), size - 1
  end
  local first, last = tonumber(a), b ~= "" and tonumber(b) or size - 1
  if b ~= "" and last < first then return nil end -- invalid (RFC 9110 14.1.1): ignored
  if first >= size then return false end
  return first, math.min(last, size - 1)
end

-- The file's path below root for the request, or nil when the request
-- tries to leave it (.. or . segments, encoded slashes or backslashes, NUL).
local function local_path(req)
  local raw = req.target:match("^[^?#]*"):lower()
  if raw:find("%2f", 1, true) or raw:find("%5c", 1, true) or raw:find("%00", 1, true) then return nil end
  local rel = req.params and req.params.path or req.path
  if rel:find("[%z\\]") then return nil end
  for seg in rel:gmatch("[^/]+") do
    if seg == ".." or seg == "." then return nil end
  end
  return rel
end

-- Sends length bytes of file from offset on res, whose head was sent.
local function send_body(res, file, offset, length)
  local st = res._conn:stream()
  local ok, err, code = st:_sendfile(file:fileno(), offset, length)
  if ok or code ~= "ENOTSUP" then return ok, err, code end
  -- under TLS the bytes are encrypted on their way: read and write them
  file:seek("set", offset)
  while length > 0 do
    local chunk, rerr, rcode = file:read(math.min(length, 65536))
    if not chunk or chunk == "" then return nil, rerr or "the file ended early", rcode or "EOF" end
    ok, err, code = st:write(chunk)
    if not ok then return nil, err, code end
    length = length - #chunk
  end
  return true
end

--- A handler serving the files below `dir`: as a route
-- (`app:get("/assets/*path", loom.http.static("public"))`, the wildcard
-- naming the file) or as a whole server's handler (the request's path
-- naming it). GET and HEAD (others get 405); a directory answers with its
-- index file, if any; what is not a regular file below `dir` is 404 (a
-- `..` segment, an encoded slash or backslash, a symbolic link leading
-- out of `dir`). Bodies go from the page cache to the socket by sendfile;
-- `ETag` (size and modification time) and `Last-Modified` answer
-- conditional requests with 304; a single `Range` gets 206 (416 when it
-- cannot be satisfied). May block (reads the file system through the
-- thread pool).
-- @function static
-- @tparam string dir
-- @tparam[opt] table opts `index` ("index.html"; false: none),
-- `max_age` (seconds: a `Cache-Control: public, max-age=N` header),
-- `types` (extension -> Content-Type, added to the built-in table),
-- `cache` (1: seconds a resolved path and its open file are reused, so a
-- file changed on disk may be served as it was for that long; 0: never)
-- @treturn function the handler
-- @usage loom.http.serve("0.0.0.0", 8080, loom.http.static("public"))
function static.new(dir, opts)
  check_type(dir, "string", 1, "static")
  check_type(opts, "table", 2, "static", true)
  opts = opts or {}
  local index = opts.index == nil and "index.html" or opts.index
  if index ~= false and type(index) ~= "string" then argerror(2, "static", "index must be a file name or false") end
  if opts.max_age ~= nil and (math.type(opts.max_age) ~= "integer" or opts.max_age < 0) then
    argerror(2, "static", "max_age must be a number of seconds")
  end
  local types = setmetatable({}, { __index = TYPES })
  for k, v in pairs(opts.types or {}) do types[k:lower()] = v end
  local cache_control = opts.max_age and ("public, max-age=%d"):format(opts.max_age)
  local ttl = opts.cache == nil and 1 or opts.cache
  if type(ttl) ~= "number" or ttl < 0 then argerror(2, "static", "cache must be a number of seconds") end
  local root -- the directory's real path, found at the first request
  -- What a path resolved to, kept `ttl` seconds with its open file (as
  -- nginx's open_file_cache): a request for a cached file costs no file
  -- system call but the sendfile. Entries in use when they expire are
  -- closed by their last user.
  local cache, cached = {}, 0

  local function release(e)
    e.users = e.users - 1
    if e.stale and e.users == 0 then e.file:close() end
  end

  local function retire(rel, e)
    if cache[rel] == e then cache[rel], cached = nil, cached - 1 end
    e.stale = true
    if e.users == 0 then e.file:close() end
  end

  -- The entry for rel (its users counted), or nil: not a file below root.
  local function resolve(rel)
    local now = core.now()
    local e = cache[rel]
    if e then
      if now - e.at < ttl then
        e.users = e.users + 1
        return e
      end
      retire(rel, e)
    end
    local real = fs.realpath(root .. "/" .. rel)
    -- a symbolic link may lead anywhere: what it leads to must be below root
    if not real or (real ~= root and real:sub(1, #root + 1) ~= root .. "/") then return nil end
    local info = fs.stat(real)
    if info and info.type == "directory" and index then
      real = real .. "/" .. index
      info = fs.stat(real)
    end
    if not info or info.type ~= "file" then return nil end
    local file = fs.open(real, "r")
    if not file then return nil end
    local mtime = math.floor(info.mtime)
    e = { file = file, size = info.size, users = 1, at = now,
          etag = ('"%x-%x"'):format(info.size, mtime), mtime = mtime, last_modified = http_date(mtime),
          ctype = types[(real:match("%.([^./]+)$") or ""):lower()] or "application/octet-stream" }
    -- each request's to-be-closed release, made once per entry
    e.guard = setmetatable({}, { __close = function() release(e) end })
    if ttl > 0 then
      if cached >= CACHE_MAX then -- full: start again
        for k, old in pairs(cache) do retire(k, old) end
      end
      cache[rel], cached = e, cached + 1
    else
      e.stale = true -- closed when this request is done
    end
    return e
  end

  return function(req, res)
    if req.method ~= "GET" and req.method ~= "HEAD" then
      return 405, { Allow = "GET, HEAD", ["Content-Type"] = "text/plain; charset=utf-8" }, "method not allowed\n"
    end
    if not root then
      root = fs.realpath(dir)
      if not root then router.error(404, "not found") end
    end
    local rel = local_path(req)
    local e = rel and resolve(rel)
    if not e then router.error(404, "not found") end
    local _ <close> = e.guard
    local size, etag = e.size, e.etag
    local headers = { ["Last-Modified"] = e.last_modified, ETag = etag, ["Accept-Ranges"] = "bytes",
                      ["Content-Type"] = e.ctype, ["Cache-Control"] = cache_control }
    local h = req.headers -- (names are lower-case there: rawget skips the any-spelling lookup)
    local inm, ims = rawget(h, "if-none-match"), rawget(h, "if-modified-since")
    if inm then
      for tag in inm:gmatch("[^,%s]+") do
        if tag == etag or tag == "W/" .. etag or tag == "*" then return 304, headers end
      end
    elseif ims then
      local since = parse_date(ims)
      if since and e.mtime <= since then return 304, headers end
    end
    local first, last = nil, nil
    local if_range = rawget(h, "if-range")
    if not if_range or if_range == etag or if_range == e.last_modified then
      first, last = byte_range(rawget(h, "range"), size)
    end
    if first == false then
      return 416, { ["Content-Range"] = ("bytes */%d"):format(size), ["Content-Type"] = "text/plain; charset=utf-8" },
        "range not satisfiable\n"
    end
    local status, offset, length = 200, 0, size
    if first then
      status, offset, length = 206, first, last - first + 1
      headers["Content-Range"] = ("bytes %d-%d/%d"):format(first, last, size)
    end
    headers["Content-Length"] = tostring(length)
    local ok, err, code = res:_start(status, headers) -- the head
    if not ok then return nil, err, code end
    if req.method == "GET" and length > 0 then
      ok = send_body(res, e.file, offset, length)
      if not ok then
        res._failed = true
        return
      end
    end
    res:finish()
  end
end

return static
