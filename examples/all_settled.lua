-- One of three requests fails; all_settled still reports the other two, in
-- argument order, and never raises.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

loom.run(function()
  local t0 = loom.now()
  local function request(name, seconds, fail)
    return function()
      loom.sleep(seconds * SCALE)
      if fail then error({ status = 503, what = name }) end
      return name .. " ok"
    end
  end
  local records = loom.all_settled(request("alpha", 0.3), request("beta", 0.1, true), request("gamma", 0.2))
  for i, r in ipairs(records) do
    if r.ok then
      print(string.format("%5.2fs  #%d succeeded: %s", loom.now() - t0, i, r.value))
    else
      print(string.format("%5.2fs  #%d failed: %s returned %d", loom.now() - t0, i, r.error.what, r.error.status))
    end
  end
end)
