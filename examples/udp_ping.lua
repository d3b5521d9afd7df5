-- UDP ping: a responder answers each datagram; the pinger sends five pings
-- and prints each round-trip time, then one to nobody, which times out.
local loom = require "loom"

loom.run(function()
  local responder = assert(loom.udp.bind("127.0.0.1", 0))
  local _, rport = responder:sockname()
  loom.spawn(function()
    while true do
      local data, host, port = responder:recv()
      if not data then return end
      responder:send("pong " .. data, host, port)
    end
  end)
  local pinger <close> = assert(loom.udp.bind("127.0.0.1", 0))
  for i = 1, 5 do
    local t0 = loom.now()
    pinger:send(tostring(i), "127.0.0.1", rport)
    local reply = pinger:recv(1)
    print(string.format("ping %d: %s in %.3f ms", i, reply, (loom.now() - t0) * 1000))
  end
  responder:close()
  local quiet <close> = assert(loom.udp.bind("127.0.0.1", 0))
  local _, qport = quiet:sockname()
  pinger:send("anyone?", "127.0.0.1", qport)
  print("unanswered ping:", select(2, pinger:recv(0.1)))
end)
