-- A line-based chat server: every line a client sends reaches all the other
-- clients. Three clients join, talk, and one leaves; each prints what it hears.
local loom = require "loom"

loom.run(function()
  local clients = {} -- stream -> name
  local function broadcast(from, text)
    for stream in pairs(clients) do
      if stream ~= from then stream:write(text, "\n") end
    end
  end
  local server = assert(loom.tcp.serve("127.0.0.1", 0, function(stream)
    local name = stream:read_line()
    if not name then return end
    clients[stream] = name
    broadcast(stream, "* " .. name .. " joined")
    for line in stream:lines() do broadcast(stream, name .. ": " .. line) end
    clients[stream] = nil
    broadcast(stream, "* " .. name .. " left")
  end))
  local _, port = server:address()

  local function member(name, lines, hear)
    local s <close> = assert(loom.tcp.connect("127.0.0.1", port))
    s:write(name, "\n")
    local listener = loom.spawn(function()
      for i = 1, hear do
        local msg = s:read_line()
        if not msg then return end
        print(string.format("%-6s hears  %s", name, msg))
      end
    end)
    for _, line in ipairs(lines) do
      loom.sleep(0.05)
      s:write(line, "\n")
    end
    listener:await()
  end

  loom.group(function(g)
    g:spawn(member, "ana", { "hi all" }, 6)
    loom.sleep(0.01)
    g:spawn(member, "bruno", { "hello ana" }, 5)
    loom.sleep(0.01)
    g:spawn(member, "chen", { "hey", "bye" }, 2)
  end)
  server:close()
end)
