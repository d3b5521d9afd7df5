--- loom.http.common (internal): what the HTTP server and client share:
-- the header tables' case-insensitive lookup, and query strings (loom.http.encode_query / decode_query).
-- @module loom.http
local core = require "loom.core"
local args = require "loom.args"

local http = {}

local check_type = args.type

-- Header tables hold lower-case names; any other spelling finds them too.
local headers_mt = core._http_headers_mt
headers_mt.__index = function(t, k)
  if type(k) == "string" then
    local l = k:lower()
    if l ~= k then return rawget(t, l) end
  end
end

local unescape = core._http_unescape

--- Decodes an application/x-www-form-urlencoded string (a query string);
-- a repeated name keeps the last value. Never blocks.
-- @tparam string s
-- @treturn table
-- @usage loom.http.decode_query("a=1&b=x+y") --> {a = "1", b = "x y"}
function http.decode_query(s)
  check_type(s, "string", 1, "decode_query")
  local q = {}
  for pair in s:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    q[unescape(k, true)] = unescape(v, true)
  end
  return q
end

local function escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--- Encodes a table as a query string (names sorted, so the result is
-- stable). Never blocks.
-- @tparam table t
-- @treturn string
-- @usage loom.http.encode_query({ q = "a b", n = 2 }) --> "n=2&q=a%20b"
function http.encode_query(t)
  check_type(t, "table", 1, "encode_query")
  local keys, out = {}, {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = t[k]
    if v == nil then v = t[tonumber(k)] end
    out[#out + 1] = escape(k) .. "=" .. escape(v)
  end
  return table.concat(out, "&")
end

http.headers_mt = headers_mt

return http
