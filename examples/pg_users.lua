-- The tutorials' get_user_data(), on PostgreSQL: 200 users fetched
-- concurrently through a pool of 5 connections, against the same fetches one
-- after another. Every query is a wait for the server, so the concurrent
-- version overlaps them. Uses $LOOM_PG (a libpq conninfo) or starts a
-- throwaway server with tools/pg-server.sh.
local loom = require "loom"

local function database()
  local info = os.getenv("LOOM_PG")
  if info then return info, function() end end
  local dir = os.tmpname()
  os.remove(dir)
  local p = io.popen("sh tools/pg-server.sh start " .. dir)
  local out = p:read("a")
  p:close()
  local port = assert(out:match(" (%d+)"), "could not start PostgreSQL")
  return ("host=%s port=%s dbname=loom user=loom"):format(dir, port),
    function() os.execute("sh tools/pg-server.sh stop " .. dir) end
end

local conninfo, stop = database()

-- Each lookup also waits 2 ms on the server, as a real query over a
-- network would.
local function get_user_data(pool, id)
  local rows = assert(pool:query("SELECT id, name, pg_sleep(0.002)::text AS _ FROM pg_users WHERE id = $1", id))
  return rows[1]
end

loom.run(function()
  local pool <close> = loom.pg.pool { conninfo, max = 5 }
  do
    local c <close> = assert(pool:acquire())
    assert(c:exec("DROP TABLE IF EXISTS pg_users; CREATE TABLE pg_users (id int PRIMARY KEY, name text)"))
    local users = {}
    for i = 1, 200 do users[i] = { i, "user " .. i } end
    print(("inserted %d users in one batch"):format(c:batch("INSERT INTO pg_users VALUES ($1, $2)", users)))
  end

  local t0 = loom.now()
  for id = 1, 200 do assert(get_user_data(pool, id).id == id) end
  local sequential = loom.now() - t0

  t0 = loom.now()
  local fetches = {}
  for id = 1, 200 do fetches[id] = function() return get_user_data(pool, id) end end
  local users = { loom.gather(table.unpack(fetches)) }
  local concurrent = loom.now() - t0

  print(("fetched %d users, user 42 is %q"):format(#users, users[42].name))
  print(("one after another: %.0f ms; concurrently over %d connections: %.0f ms (%.1fx)"):format(
    sequential * 1000, pool:stats().open, concurrent * 1000, sequential / concurrent))
end)
stop()
