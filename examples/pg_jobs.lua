-- A job queue on PostgreSQL: producers insert jobs and NOTIFY; a listener
-- task turns notifications into wake-ups for three workers, which claim
-- jobs with FOR UPDATE SKIP LOCKED (so no job runs twice, whatever the
-- timing) and mark them done. Uses $LOOM_PG (a libpq conninfo) or starts a
-- throwaway server with tools/pg-server.sh.
local loom = require "loom"
local JOBS, WORKERS = 12, 3

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

-- Claims the oldest new job, or returns nil when there is none.
local CLAIM = [[
UPDATE pg_jobs SET state = 'running', worker = $1
WHERE id = (SELECT id FROM pg_jobs WHERE state = 'new' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING id, payload]]

loom.run(function()
  local pool <close> = loom.pg.pool { conninfo, max = WORKERS + 1 }
  assert(pool:query("DROP TABLE IF EXISTS pg_jobs"))
  assert(pool:query([[CREATE TABLE pg_jobs (id serial PRIMARY KEY, payload text,
    state text NOT NULL DEFAULT 'new', worker int)]]))

  local wakeups = loom.queue()
  local listener = assert(loom.pg.connect(conninfo))
  assert(listener:listen("pg_jobs"))
  loom.spawn(function() -- one notification, one wake-up
    for _, payload in listener:notifications() do wakeups:put(payload) end
  end)

  local done = 0
  local all_done = loom.event()
  local workers = {}
  for w = 1, WORKERS do
    workers[w] = loom.spawn(function()
      while true do
        wakeups:get()
        local rows = assert(pool:query(CLAIM, w))
        for _, job in ipairs(rows) do
          loom.sleep(0.01) -- the work
          assert(pool:query("UPDATE pg_jobs SET state = 'done' WHERE id = $1", job.id))
          print(("worker %d did job %d (%s)"):format(w, job.id, job.payload))
          done = done + 1
          if done == JOBS then all_done:set() end
        end
      end
    end)
  end

  for i = 1, JOBS do -- the producer: the insert and its notification commit together
    assert(pool:transaction(function(c)
      local id = assert(c:query("INSERT INTO pg_jobs (payload) VALUES ($1) RETURNING id", "email " .. i))[1].id
      assert(c:query("SELECT pg_notify('pg_jobs', $1)", tostring(id)))
      return true
    end))
  end

  all_done:wait()
  local counts = assert(pool:query("SELECT state, count(*) AS n FROM pg_jobs GROUP BY state"))
  for _, row in ipairs(counts) do print(("%d jobs %s"):format(row.n, row.state)) end
  for _, w in ipairs(workers) do w:cancel() end
  listener:close()
end)
stop()
