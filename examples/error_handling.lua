-- Errors in tasks: pcall around a blocking call catches its error like any
-- other; a task's error comes out of await (the same value, with the task's
-- traceback added to strings); errors as values (nil, msg, code) are the
-- norm for I/O. Cancellation is an error too: tell it apart with
-- loom.is_cancelled and let it go on.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

local function flaky(n)
  loom.sleep(0.1 * SCALE)
  if n % 2 == 0 then error({ code = 503, msg = "service unavailable" }) end -- a table error
  return "reply " .. n
end

loom.run(function()
  for n = 1, 2 do
    local ok, res = pcall(flaky, n)
    print(ok and ("call %d: %s"):format(n, res) or ("call %d failed: %d %s"):format(n, res.code, res.msg))
  end

  local t = loom.spawn(function() loom.sleep(0.1 * SCALE); error("disk full") end)
  local ok, err = pcall(t.await, t)
  print("await re-raised: " .. tostring(ok) .. ", " .. err:match("^[^\n]*"))

  local conn, msg, code = loom.tcp.connect("127.0.0.1", 1) -- nobody listens on port 1
  print(("connect returned: %s, %s, %s"):format(tostring(conn), msg, code))

  local victim = loom.spawn(function()
    local caught, e = pcall(loom.sleep, 10)
    if not caught and loom.is_cancelled(e) then
      print("the victim saw its cancellation: " .. tostring(e))
      error(e, 0) -- let it go on: the task ends cancelled
    end
  end)
  loom.sleep(0.05 * SCALE)
  victim:cancel("not needed")
  pcall(victim.await, victim)
  print("victim: " .. victim:status())
end)
