-- loom.pg under load (bench/pg.sh): usage pg_loom.lua CONNINFO select|wait SECS | insert ROWS
-- select: 50 tasks, each running SELECT id, name FROM users WHERE id = $1
-- over a pool of 10 for SECS seconds; prints queries/s. wait: the same
-- query made to wait 1 ms on the server (as a network round trip would).
-- insert: ROWS rows inserted in one transaction (conn:batch); prints rows/s.
local loom = require "loom"
local conninfo, mode, n = arg[1], arg[2], tonumber(arg[3])
local Q = mode == "wait" and "SELECT u.id, u.name FROM users u, pg_sleep(0.001) WHERE u.id = $1"
  or "SELECT id, name FROM users WHERE id = $1"

loom.run(function()
  if mode ~= "insert" then
    local pool = loom.pg.pool { conninfo, max = 10 }
    local count, stop = 0, false
    local tasks = {}
    for w = 1, 50 do
      tasks[w] = loom.spawn(function()
        local id = w
        while not stop do
          local rows = assert(pool:query(Q, id))
          assert(rows[1].id == id)
          count = count + 1
          id = id % 10000 + 1
        end
      end)
    end
    loom.sleep(0.5) -- warm: connections open, statements prepared
    local c0, t0 = count, loom.now()
    loom.sleep(n)
    local c1, t1 = count, loom.now()
    stop = true
    for _, t in ipairs(tasks) do t:await() end
    print(("qps=%d"):format(math.floor((c1 - c0) / (t1 - t0))))
    pool:close()
  else
    local c = assert(loom.pg.connect(conninfo))
    local rows = {}
    for i = 1, n do rows[i] = { i, "name " .. i } end
    local best = math.huge
    for _ = 1, 3 do
      assert(c:exec("TRUNCATE bulk"))
      local t0 = loom.now()
      assert(c:transaction(function(tx) return tx:batch("INSERT INTO bulk VALUES ($1, $2)", rows) end))
      best = math.min(best, loom.now() - t0)
    end
    print(("rows_per_s=%d"):format(math.floor(n / best)))
    c:close()
  end
end)
