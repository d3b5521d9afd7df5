-- A chat room over WebSockets: one loom.http server serves the page (a
-- browser client in plain JavaScript at /) and the room at /chat; every
-- message is broadcast to everyone in the room. Three loom clients join,
-- talk and leave; open http://127.0.0.1:PORT/ in a browser meanwhile (with
-- `keep` as the first argument the server stays up) to join from there.
-- Run: lua5.4 examples/ws_chat.lua [keep]
local loom = require "loom"

local PAGE = [[<!doctype html><meta charset="utf-8"><title>loom chat</title>
<ul id="log"></ul><form id="f"><input id="m" autocomplete="off"><button>send</button></form>
<script>
const params = new URLSearchParams(location.search);
const ws = new WebSocket(`ws://${location.host}/chat?name=${encodeURIComponent(params.get("name") || "browser")}`);
const log = (t) => { const li = document.createElement("li"); li.textContent = t; document.getElementById("log").append(li); };
ws.onmessage = (e) => log(e.data);
ws.onopen = () => { if (params.get("say")) ws.send(params.get("say")); };
document.getElementById("f").onsubmit = (e) => { e.preventDefault(); const m = document.getElementById("m"); ws.send(m.value); m.value = ""; };
</script>]]

loom.run(function()
  local room = {} -- websocket -> name
  local function broadcast(text)
    for ws in pairs(room) do ws:send(text) end
  end

  local server = assert(loom.http.serve("127.0.0.1", 0, function(req)
    if req.path ~= "/chat" then return 200, { ["Content-Type"] = "text/html; charset=utf-8" }, PAGE end
    local ws = loom.websocket.upgrade(req)
    if not ws then return end
    local name = req.query.name or ("guest" .. math.random(1000))
    room[ws] = name
    broadcast(name .. " joined")
    for text in ws:messages() do broadcast(name .. ": " .. text) end
    room[ws] = nil
    broadcast(name .. " left")
  end))
  local _, port = server:address()
  print(("chat room at http://127.0.0.1:%d/"):format(port))

  local function member(name, lines)
    local ws <close> = assert(loom.websocket.connect(("ws://127.0.0.1:%d/chat?name=%s"):format(port, name)))
    local heard = {}
    local listener = loom.spawn(function()
      for text in ws:messages() do heard[#heard + 1] = text end
    end)
    loom.sleep(0.05) -- everyone is in before anyone talks
    for _, line in ipairs(lines) do
      ws:send(line)
      loom.sleep(0.02)
    end
    loom.sleep(0.1)
    ws:close()
    listener:await()
    return { name = name, heard = heard }
  end

  local members = { loom.gather(
    function() return member("ada", { "hello all", "bye" }) end,
    function() return member("bob", { "hi ada" }) end,
    function() return member("cy", {}) end) }
  for _, m in ipairs(members) do
    print(("%s heard %d messages:"):format(m.name, #m.heard))
    for _, text in ipairs(m.heard) do print("  " .. text) end
  end
  if arg[1] == "keep" then loom.sleep(1e9) end
  server:close()
end)
