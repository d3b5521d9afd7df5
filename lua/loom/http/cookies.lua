--- A client's cookie jar (RFC 6265's storage model, without the public
-- suffix list): cookies kept from `Set-Cookie` and sent back in `Cookie`
-- to the hosts and paths they were set for, `Secure` ones over https only,
-- until they expire.
-- @module loom.http
local jar = {}

local Jar = { __name = "loom.http.CookieJar" }
Jar.__index = Jar

--- The cookies of a session (`session.cookies`).
-- @type CookieJar

local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6, jul = 7, aug = 8, sep = 9, oct = 10,
                 nov = 11, dec = 12 }

-- Seconds since the epoch of a cookie date (RFC 6265's lenient parse:
-- a time, a day, a month name and a year in any order), or nil.
local function cookie_date(s)
  local day, month, year, h, m, sec
  for tok in s:gmatch("[%w:]+") do
    local th, tm, ts = tok:match("^(%d%d?):(%d%d?):(%d%d?)$")
    if th and not h then
      h, m, sec = tonumber(th), tonumber(tm), tonumber(ts)
    elseif not day and tok:match("^%d%d?$") then
      day = tonumber(tok)
    elseif not month and MONTHS[tok:sub(1, 3):lower()] then
      month = MONTHS[tok:sub(1, 3):lower()]
    elseif not year and tok:match("^%d%d%d?%d?$") then
      year = tonumber(tok)
      if year < 70 then year = year + 2000 elseif year < 100 then year = year + 1900 end
    end
  end
  if not (day and month and year and h) then return nil end
  local t = { year = year, month = month, day = day, hour = h, min = m, sec = sec, isdst = false }
  local localt = os.time(t)
  return localt + (localt - os.time(os.date("!*t", localt)))
end

local function domain_match(host, domain)
  return host == domain or (#host > #domain and host:sub(-#domain - 1) == "." .. domain
    and not host:match("^[%d.]+$") and not host:find(":", 1, true))
end

local function path_match(path, cpath)
  if path == cpath then return true end
  if path:sub(1, #cpath) ~= cpath then return false end
  return cpath:sub(-1) == "/" or path:sub(#cpath + 1, #cpath + 1) == "/"
end

local function default_path(target)
  local path = target:match("^[^?#]*")
  if path:sub(1, 1) ~= "/" then return "/" end
  local dir = path:match("^(.*)/[^/]*$")
  return (dir == nil or dir == "") and "/" or dir
end

-- Stores one Set-Cookie value received from url u.
local function store_one(self, u, line, now)
  local pair, rest = line:match("^%s*([^;]*)(.*)$")
  local name, value = pair:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
  if not name or name == "" then return end
  local c = { name = name, value = value, path = default_path(u.target), domain = u.host:lower(), host_only = true }
  local max_age, expires
  for attr in rest:gmatch(";%s*([^;]*)") do
    local k, v = attr:match("^([^=]-)%s*=%s*(.-)%s*$")
    k = (k or attr:match("^(.-)%s*$")):lower()
    if k == "domain" and v and v ~= "" then
      local d = v:gsub("^%.", ""):lower()
      if not domain_match(u.host:lower(), d) then return end -- not ours to set
      c.domain, c.host_only = d, false
    elseif k == "path" and v and v:sub(1, 1) == "/" then
      c.path = v
    elseif k == "max-age" and v and v:match("^%-?%d+$") then
      max_age = tonumber(v)
    elseif k == "expires" and v then
      expires = cookie_date(v)
    elseif k == "secure" then
      c.secure = true
    elseif k == "httponly" then
      c.http_only = true
    end
  end
  if max_age then c.expires = now + max_age elseif expires then c.expires = expires end
  local key = c.domain .. ";" .. c.path .. ";" .. c.name
  if c.expires and c.expires <= now then
    self._cookies[key] = nil -- expired: the server removes it
  else
    c.created = (self._cookies[key] or {}).created or now + self._seq * 1e-6
    self._seq = self._seq + 1
    self._cookies[key] = c
  end
end

-- Keeps the cookies a response from url u sets (a list of Set-Cookie
-- values, or nil).
function Jar:_store(u, list)
  if not list then return end
  local now = os.time()
  for _, line in ipairs(list) do store_one(self, u, line, now) end
end

--- The cookies that would be sent to url u (parsed), in the order
-- RFC 6265 gives: longer paths first, then older first.
function Jar:_for(u)
  local now, host, path, out = os.time(), u.host:lower(), u.target:match("^[^?#]*"), {}
  for key, c in pairs(self._cookies) do
    if c.expires and c.expires <= now then
      self._cookies[key] = nil
    elseif (c.host_only and host == c.domain or not c.host_only and domain_match(host, c.domain))
        and path_match(path, c.path) and (not c.secure or u.scheme == "https") then
      out[#out + 1] = c
    end
  end
  table.sort(out, function(a, b)
    if #a.path ~= #b.path then return #a.path > #b.path end
    return a.created < b.created
  end)
  return out
end

-- The Cookie header for url u, or nil.
function Jar:_header(u)
  local list = self:_for(u)
  if #list == 0 then return nil end
  local parts = {}
  for i, c in ipairs(list) do parts[i] = c.name .. "=" .. c.value end
  return table.concat(parts, "; ")
end

--- Every cookie kept: a list of `{name, value, domain, path, expires,
-- secure, http_only}` (expires: seconds since the epoch, nil for a
-- session cookie). Never blocks.
-- @treturn table
function Jar:list()
  local out = {}
  local now = os.time()
  for _, c in pairs(self._cookies) do
    if not c.expires or c.expires > now then
      out[#out + 1] = { name = c.name, value = c.value, domain = c.domain, path = c.path, expires = c.expires,
                        secure = c.secure or false, http_only = c.http_only or false }
    end
  end
  table.sort(out, function(a, b) return a.domain .. a.path .. a.name < b.domain .. b.path .. b.name end)
  return out
end

--- Forgets every cookie. Never blocks.
function Jar:clear()
  self._cookies = {}
end

function jar.new()
  return setmetatable({ _cookies = {}, _seq = 0 }, Jar)
end

return jar
