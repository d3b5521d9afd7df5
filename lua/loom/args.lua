--- loom.args (internal): the argument checks the Lua modules share, with
-- the messages of Lua's own libraries
-- (`bad argument #2 to 'connect' (number expected, got nil)`). Raised at
-- level 3: the caller of the public function that checks.
local args = {}

function args.error(n, fname, msg)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end
local argerror = args.error

--- v must be of Lua type t (or nil, when optional).
function args.type(v, t, n, fname, optional)
  if (v ~= nil or not optional) and type(v) ~= t then
    argerror(n, fname, ("%s expected, got %s"):format(t, v == nil and "nil" or type(v)))
  end
end

--- port must be an integer 0-65535.
function args.port(port, n, fname)
  if math.type(port) ~= "integer" then
    argerror(n, fname, ("number expected, got %s"):format(port == nil and "nil" or type(port)))
  end
  if port < 0 or port > 65535 then argerror(n, fname, "port must be 0-65535") end
end

return args
