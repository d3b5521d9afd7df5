-- An echo server and a client in one program: the server runs a task per
-- connection; the client sends lines and prints what comes back, with the
-- round-trip time of each.
local loom = require "loom"

loom.run(function()
  local server = assert(loom.tcp.serve("127.0.0.1", 0, function(stream)
    for line in stream:lines() do
      stream:write(line:upper(), "\n")
    end
  end))
  local host, port = server:address()
  print(string.format("echo server listening on %s:%d", host, port))

  local client = assert(loom.tcp.connect(host, port))
  for _, word in ipairs({ "hello", "concurrent", "world" }) do
    local t0 = loom.now()
    client:write(word, "\n")
    local reply = client:read_line()
    print(string.format("sent %-10s got %-10s in %.3f ms", word, reply, (loom.now() - t0) * 1000))
  end
  client:close()
  server:close()
end)
