-- A timing scope with <close>: a small helper that prints how long a block
-- took, however it ends (normally, by an error, or cancelled).
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

local function timed(label)
  local start = loom.now()
  return setmetatable({}, { __close = function(_, err)
    print(string.format("[timer] %-16s %.2fs%s", label, loom.now() - start, err and " (ended by an error)" or ""))
  end })
end

loom.run(function()
  do
    local _ <close> = timed("one sleep")
    loom.sleep(0.3 * SCALE)
  end
  do
    local _ <close> = timed("gather of three")
    loom.gather(function() loom.sleep(0.2 * SCALE) end, function() loom.sleep(0.4 * SCALE) end,
                function() loom.sleep(0.1 * SCALE) end)
  end
  pcall(function()
    local _ <close> = timed("failing block")
    loom.sleep(0.1 * SCALE)
    error("boom")
  end)
end)
