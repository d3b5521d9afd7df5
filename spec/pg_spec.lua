-- loom.pg against a real PostgreSQL started for this file (tools/pg-server.sh).
local loom = require "loom"
local helper = require "helper"
local run = helper.run
local pg = loom.pg

describe("loom.pg", function()
  local srv

  setup(function() srv = helper.pg_server() end)
  teardown(function() if srv then srv.stop() end end)

  -- Runs body(conn) with a fresh connection, closed afterwards.
  local function with_conn(body, limit)
    return run(function()
      local c = assert(pg.connect(srv.conninfo))
      local r = table.pack(body(c))
      c:close()
      return table.unpack(r, 1, r.n)
    end, limit)
  end

  -- Queries of the superuser, on a connection of their own.
  local function admin(sql, ...)
    local c = assert(pg.connect(srv.super))
    local rows, err, code = c:query(sql, ...)
    c:close()
    return rows, err, code
  end

  describe("connect", function()
    it("connects over the socket and over TCP with a password, and as a URL", function()
      run(function()
        for _, info in ipairs { srv.conninfo, srv.tcp, (srv.tcp:gsub("127.0.0.1", "localhost")),
          ("postgresql://loom:secret@127.0.0.1:%d/loom"):format(srv.port),
          ("postgresql://loom:secret@localhost:%d/loom"):format(srv.port) } do
          local c = assert(pg.connect(info))
          assert.are.equal("ready", c:status())
          assert.are.equal("loom", c:query("SELECT current_user AS u")[1].u)
          assert.is_true(c:pid() > 0)
          c:close()
          assert.are.equal("closed", c:status())
          c:close() -- idempotent
        end
      end)
    end)

    it("gives the server's SQLSTATE for a bad password and an unknown database", function()
      run(function()
        local c, err, code = pg.connect((srv.tcp:gsub("secret", "wrong")))
        assert.is_nil(c)
        assert.are.equal("28P01", code)
        assert.matches("password authentication failed", err)
        c, err, code = pg.connect((srv.conninfo:gsub("dbname=loom", "dbname=nope")))
        assert.is_nil(c)
        assert.are.equal("3D000", code)
        assert.matches('database "nope" does not exist', err)
      end)
    end)

    it("gives 08001 when nothing listens, and ETIMEDOUT when the server never answers", function()
      run(function()
        local s = assert(loom.tcp.listen("127.0.0.1", 0))
        local _, port = s:address()
        s:close()
        local c, err, code = pg.connect(("host=127.0.0.1 port=%d dbname=x user=x"):format(port))
        assert.is_nil(c)
        assert.are.equal("08001", code)
        assert.matches("Connection refused", err)
        -- a server that accepts and says nothing
        local mute = assert(loom.tcp.listen("127.0.0.1", 0))
        local held = {}
        local acceptor = loom.spawn(function()
          while true do held[#held + 1] = mute:accept() end
        end)
        local t0 = loom.now()
        c, err, code = pg.connect(("host=127.0.0.1 port=%d dbname=x user=x sslmode=disable"):format(
          select(2, mute:address())), { timeout = 0.2 })
        local took = loom.now() - t0
        assert.is_nil(c)
        assert.are.same({ "timeout", "ETIMEDOUT" }, { err, code })
        assert.is_true(took >= 0.2 and took < helper.upper(0.2, 0.4), took)
        acceptor:cancel()
        mute:close()
        for _, h in ipairs(held) do h:close() end
      end)
    end)

    it("resolves host names without blocking, and refuses a bad connection string", function()
      run(function()
        local c, err, code = pg.connect("host=nonexistent.invalid dbname=x")
        assert.is_nil(c)
        assert.are.equal("08001", code)
        assert.matches('could not resolve "nonexistent.invalid"', err)
        c, err, code = pg.connect("bogus")
        assert.is_nil(c)
        assert.are.equal("08001", code)
        assert.matches("invalid connection string", err)
      end)
    end)

    it("checks its arguments", function()
      run(function()
        assert.has_error(function() pg.connect(nil) end, "bad argument #1 to 'connect' (string expected, got nil)")
        assert.has_error(function() pg.connect("x", 5) end, "bad argument #2 to 'connect' (table expected, got number)")
        assert.has_error(function() pg.connect("x", { timeout = -1 }) end,
          "bad argument #2 to 'connect' (timeout must be a positive number)")
      end)
      assert.has_error(function() pg.connect(srv.conninfo) end)
    end)
  end)

  describe("query", function()
    it("converts every type it knows, the same on first, second and later runs", function()
      with_conn(function(c)
        assert(c:exec([[CREATE TABLE types (i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, b bool,
          t text, v varchar(10), by bytea, n numeric, d date, j json, z int4)]]))
        local blob = "a\0b\255\0"
        assert.are.equal(1, c:query("INSERT INTO types VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
          -32768, 2147483647, math.maxinteger, 1.5, 0.1, true, "héllo", "vc", blob, "12345678901234567890.5",
          "2026-12-03", '{"a": [1, 2]}', nil).affected)
        for run_no = 1, 4 do
          local rows = assert(c:query("SELECT * FROM types WHERE i4 = $1", 2147483647))
          local r = rows[1]
          assert.are.equal(1, #rows, run_no)
          assert.are.same({ "i2", "i4", "i8", "f4", "f8", "b", "t", "v", "by", "n", "d", "j", "z" }, rows.columns)
          assert.are.equal(-32768, r.i2)
          assert.are.equal(2147483647, r.i4)
          assert.are.equal(math.maxinteger, r.i8)
          assert.are.equal("integer", math.type(r.i8))
          assert.are.equal(1.5, r.f4)
          assert.are.equal(0.1, r.f8)
          assert.is_true(r.b)
          assert.are.equal("héllo", r.t)
          assert.are.equal("vc", r.v)
          assert.are.equal(blob, r.by)
          assert.are.equal("12345678901234567890.5", r.n)
          assert.are.equal("2026-12-03", r.d)
          assert.are.equal('{"a": [1, 2]}', r.j)
          assert.is_nil(r.z)
        end
        -- all-convertible columns go binary from the second run: same values
        for _ = 1, 3 do
          local r = c:query("SELECT i8, f8, b, by, t FROM types")[1]
          assert.are.same({ i8 = math.maxinteger, f8 = 0.1, b = true, by = blob, t = "héllo" }, r)
        end
      end)
    end)

    it("sends floats exactly and bytea parameters with NUL bytes", function()
      with_conn(function(c)
        for _, x in ipairs { 0.1, 1 / 3, -2.5e-300, 1e308 } do
          assert.are.equal(x, c:query("SELECT $1::float8 AS x", x)[1].x)
        end
        assert.are.equal(math.huge, c:query("SELECT $1::float8 AS x", math.huge)[1].x)
        local bytes = {}
        for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
        local all = table.concat(bytes):rep(40)
        assert.are.equal(all, c:query("SELECT $1::bytea AS b", all)[1].b)
        assert.are.equal(#all, c:query("SELECT length($1::bytea) AS n", all)[1].n)
      end)
    end)

    it("counts affected rows; DDL affects none", function()
      with_conn(function(c)
        assert.are.equal(0, c:query("CREATE TABLE aff (id int)").affected)
        assert.are.equal(3, c:query("INSERT INTO aff SELECT generate_series(1, 3)").affected)
        assert.are.equal(2, c:query("UPDATE aff SET id = id + 10 WHERE id > $1", 1).affected)
        assert.are.equal(3, c:query("DELETE FROM aff").affected)
        assert.are.equal(0, #c:query("SELECT * FROM aff"))
      end)
    end)

    it("gives nil, msg, sqlstate for bad SQL, violations and bad parameters, and stays usable", function()
      with_conn(function(c)
        assert(c:exec("CREATE TABLE uniq (id int PRIMARY KEY)"))
        assert(c:query("INSERT INTO uniq VALUES ($1)", 1))
        local cases = {
          { "SELEC 1", "42601" },
          { "SELECT * FROM nowhere", "42P01" },
          { "INSERT INTO uniq VALUES ($1)", "23505", 1 },
          { "SELECT $1::int", "22P02", "not a number" },
          { "SELECT $1::int + $2::int", "08P01", 1 },
        }
        for _ = 1, 3 do -- unnamed, then prepared, then cached
          for _, case in ipairs(cases) do
            local rows, err, code = c:query(case[1], case[3])
            assert.is_nil(rows)
            assert.are.equal(case[2], code, case[1])
            assert.are.equal("string", type(err))
            assert.are.equal(7, c:query("SELECT 7 AS x")[1].x)
          end
        end
        assert.has_error(function() c:query("SELECT $1", {}) end,
          "query: parameter $1: cannot send a table (nil, booleans, numbers and strings can be)")
        assert.has_error(function() c:query(nil) end)
        assert.are.equal(7, c:query("SELECT 7 AS x")[1].x)
      end)
    end)

    it("prepares a statement anew when the schema changed under it", function()
      with_conn(function(c)
        assert(c:exec("CREATE TABLE morph (a int); INSERT INTO morph VALUES (1)"))
        for _ = 1, 3 do assert.are.same({ a = 1 }, c:query("SELECT * FROM morph")[1]) end
        assert(c:exec("ALTER TABLE morph ADD COLUMN b text DEFAULT 'x'"))
        local rows, _, code = c:query("SELECT * FROM morph")
        if rows == nil then
          assert.are.equal("0A000", code)
          rows = c:query("SELECT * FROM morph")
        end
        rows = assert(c:query("SELECT * FROM morph"))
        assert.are.same({ a = 1, b = "x" }, rows[1])
      end)
    end)

    it("serves the tasks sharing a connection in the order they asked", function()
      with_conn(function(c)
        local order, tasks = {}, {}
        for i = 1, 50 do
          tasks[i] = loom.spawn(function()
            local v = c:query("SELECT $1::int * 2 AS v", i)[1].v
            order[#order + 1] = i
            return v
          end)
        end
        for i = 1, 50 do assert.are.equal(2 * i, tasks[i]:await()) end
        for i = 1, 50 do assert.are.equal(i, order[i]) end
      end)
    end)

    it("turns 100,000 rows into tables without holding up a ticker", function()
      with_conn(function(c)
        local gaps, ticking = 0, true
        local ticker = loom.spawn(function()
          local last = loom.now()
          while ticking do
            loom.sleep(0.005)
            local now = loom.now()
            gaps = math.max(gaps, now - last)
            last = now
          end
        end)
        local rows = assert(c:query("SELECT g AS id, 'name ' || g AS name FROM generate_series(1, 100000) g"))
        ticking = false
        ticker:await()
        assert.are.equal(100000, #rows)
        assert.are.same({ id = 100000, name = "name 100000" }, rows[100000])
        assert.is_true(gaps < (helper.sanitized and 0.5 or 0.1), gaps)
      end, 30)
    end)
  end)

  describe("exec and batch", function()
    it("exec runs several statements and stops at the first failure", function()
      with_conn(function(c)
        assert.is_true(c:exec("CREATE TABLE ex (id int); INSERT INTO ex VALUES (1); INSERT INTO ex VALUES (2)"))
        local ok, err, code = c:exec("INSERT INTO ex VALUES (3); SELECT 1/0; INSERT INTO ex VALUES (4)")
        assert.is_nil(ok)
        assert.are.equal("22012", code)
        assert.matches("division by zero", err)
        -- one implicit transaction: the 3 is gone with the error
        assert.are.equal(2, c:query("SELECT count(*) AS n FROM ex")[1].n)
        assert.is_true(c:exec(""))
      end)
    end)

    it("batch inserts 10,000 rows in one round trip, all or nothing", function()
      with_conn(function(c)
        assert(c:exec("CREATE TABLE bulk (id int PRIMARY KEY, name text)"))
        local list = {}
        for i = 1, 10000 do list[i] = { i, "n" .. i } end
        assert.are.equal(10000, c:batch("INSERT INTO bulk VALUES ($1, $2)", list))
        assert.are.same({ n = 10000, s = 50005000 }, c:query("SELECT count(*) AS n, sum(id)::int8 AS s FROM bulk")[1])
        local _, err, code = c:batch("INSERT INTO bulk VALUES ($1, $2)", { { 10001, "a" }, { 5, "dup" }, { 10002, "b" } })
        assert.are.equal("23505", code)
        assert.matches("duplicate key", err)
        assert.are.equal(10000, c:query("SELECT count(*) AS n FROM bulk")[1].n)
        assert.are.equal(2, c:batch("INSERT INTO bulk VALUES ($1, $2)", { { 10001, "a" }, { 10002, "b" } }))
        assert.has_error(function() c:batch("INSERT INTO bulk VALUES ($1)", { { 1 }, 2 }) end,
          "batch: entry 2 is a number, not a list of parameters")
        assert.are.equal(0, c:batch("INSERT INTO bulk VALUES ($1)", {}))
        assert.are.equal(10002, c:query("SELECT count(*) AS n FROM bulk")[1].n)
      end, 20)
    end)
  end)

  describe("COPY", function()
    it("copies in from a string, a list and a function, and out to a function and a writer", function()
      with_conn(function(c)
        assert(c:exec("CREATE TABLE items (id int PRIMARY KEY, name text)"))
        assert.are.equal(2, c:copy_from("COPY items FROM STDIN (FORMAT csv)", "1,a\n2,b\n"))
        assert.are.equal(2, c:copy_from("COPY items FROM STDIN (FORMAT csv)", { "3,c\n", "4,", "d\n" }))
        local i = 4
        assert.are.equal(199996, c:copy_from("COPY items FROM STDIN", function()
          i = i + 1
          if i <= 200000 then return i .. "\tname " .. i .. "\n" end
        end))
        local out = {}
        assert.are.equal(4, c:copy_to("COPY (SELECT * FROM items WHERE id <= 4 ORDER BY id) TO STDOUT (FORMAT csv)",
          function(row) out[#out + 1] = row end))
        assert.are.same({ "1,a\n", "2,b\n", "3,c\n", "4,d\n" }, out)
        local writer = { n = 0, bytes = 0 }
        function writer:write(data) self.n, self.bytes = self.n + 1, self.bytes + #data end
        assert.are.equal(200000, c:copy_to("COPY items TO STDOUT", writer))
        assert.are.equal(200000, writer.n)
        assert.are.equal(c:query("SELECT sum(length(id::text || E'\t' || name) + 1)::int8 AS n FROM items")[1].n,
          writer.bytes)
      end, 20)
    end)

    it("keeps nothing of a COPY with bad data or whose source raised", function()
      with_conn(function(c)
        assert(c:exec("CREATE TABLE strict (id int PRIMARY KEY)"))
        local n, err, code = c:copy_from("COPY strict FROM STDIN", "1\n2\nthree\n")
        assert.is_nil(n)
        assert.are.equal("22P02", code)
        assert.matches("invalid input syntax", err)
        local e = setmetatable({}, { __tostring = function() return "source broke" end })
        local sent = 0
        local ok, got = pcall(c.copy_from, c, "COPY strict FROM STDIN", function()
          sent = sent + 1
          if sent > 3 then error(e) end
          return sent .. "\n"
        end)
        assert.is_false(ok)
        assert.are.equal(e, got)
        assert.are.equal(0, c:query("SELECT count(*) AS n FROM strict")[1].n)
        ok, got = pcall(c.copy_to, c, "COPY (SELECT generate_series(1, 100000)) TO STDOUT", function() error("sink broke", 0) end)
        assert.are.same({ false, "sink broke" }, { ok, got })
        assert.are.equal(3, c:query("SELECT 3 AS x")[1].x)
      end)
    end)

    it("refuses the wrong direction and statements that are not COPY", function()
      with_conn(function(c)
        assert(c:exec("CREATE TABLE dir (id int)"))
        assert.are.same({ nil, "copy_from needs COPY ... FROM STDIN", "42601" }, { c:copy_from("COPY dir TO STDOUT", "") })
        assert.are.same({ nil, "copy_to needs COPY ... TO STDOUT", "42601" }, { c:copy_to("COPY dir FROM STDIN", print) })
        assert.are.same({ nil, "not a COPY ... FROM STDIN or TO STDOUT statement", "42601" }, { c:copy_to("SELECT 1", print) })
        local _, _, code = c:copy_to("COPY nowhere TO STDOUT", print)
        assert.are.equal("42P01", code)
        _, _, code = c:query("COPY dir FROM STDIN")
        assert.are.equal("57014", code)
        assert.has_error(function() c:copy_from("COPY dir FROM STDIN") end,
          "bad argument #3 to 'copy_from' (string, table or function expected, got no value)")
        assert.has_error(function() c:copy_to("COPY dir TO STDOUT", 5) end,
          "bad argument #3 to 'copy_to' (function or object with a write method expected, got number)")
        assert.are.equal(0, c:query("SELECT count(*) AS n FROM dir")[1].n)
      end)
    end)

    it("holds the connection while it runs, and a cancelled COPY leaves it usable", function()
      with_conn(function(c)
        local order = {}
        local slow = loom.spawn(function()
          local k = 0
          return c:copy_to("COPY (SELECT generate_series(1, 20)) TO STDOUT", function()
            k = k + 1
            loom.sleep(0.005)
            if k == 20 then order[#order + 1] = "copy" end
          end)
        end)
        local q = loom.spawn(function()
          local v = c:query("SELECT 1 AS x")[1].x
          order[#order + 1] = "query"
          return v
        end)
        assert.are.equal(20, slow:await())
        assert.are.equal(1, q:await())
        assert.are.same({ "copy", "query" }, order)
        local t = loom.spawn(function()
          return c:copy_to("COPY (SELECT g, pg_sleep(0.001) FROM generate_series(1, 100000) g) TO STDOUT", function() end)
        end)
        loom.sleep(0.2)
        t:cancel()
        assert.is_false(pcall(t.await, t))
        assert(c:exec("CREATE TABLE fed (id int)"))
        local feeder = loom.spawn(function()
          local n = 0
          return c:copy_from("COPY fed FROM STDIN", function()
            n = n + 1
            if n > 2 then loom.sleep(10) end
            return n .. "\n"
          end)
        end)
        loom.sleep(0.05)
        feeder:cancel()
        assert.is_false(pcall(feeder.await, feeder))
        assert.are.equal(9, c:query("SELECT 9 AS x")[1].x)
        assert.are.equal(0, c:query("SELECT count(*) AS n FROM fed")[1].n)
      end, 10)
    end)
  end)

  describe("transaction", function()
    it("commits what the body did and returns its results", function()
      with_conn(function(c)
        assert(c:exec("CREATE TABLE acct (id int, v int)"))
        local a, b = c:transaction(function(tx, x)
          assert(tx:query("INSERT INTO acct VALUES (1, $1)", x))
          return "done", x
        end, 5)
        assert.are.same({ "done", 5 }, { a, b })
        assert.are.equal(5, c:query("SELECT v FROM acct")[1].v)
        assert.are.equal("idle", c:_txstatus())
      end)
    end)

    it("rolls back and raises the same error value when the body raises", function()
      with_conn(function(c)
        assert(c:exec("CREATE TABLE rb (id int)"))
        local e = { reason = "boom" }
        local ok, got = pcall(c.transaction, c, function(tx)
          assert(tx:query("INSERT INTO rb VALUES (1)"))
          error(e)
        end)
        assert.is_false(ok)
        assert.are.equal(e, got)
        assert.are.equal(0, c:query("SELECT count(*) AS n FROM rb")[1].n)
      end)
    end)

    it("rolls back a body that swallowed a failed statement", function()
      with_conn(function(c)
        assert(c:exec("CREATE TABLE sw (id int PRIMARY KEY)"))
        local ok, err, code = c:transaction(function(tx)
          assert(tx:query("INSERT INTO sw VALUES (1)"))
          tx:query("INSERT INTO sw VALUES (1)") -- fails, ignored
          return true
        end)
        assert.is_nil(ok)
        assert.are.equal("25P02", code)
        assert.matches("rolled back", err)
        assert.are.equal(0, c:query("SELECT count(*) AS n FROM sw")[1].n)
      end)
    end)

    it("rolls back when the task is cancelled inside it", function()
      with_conn(function(c)
        assert(c:exec("CREATE TABLE cx (id int)"))
        local t = loom.spawn(function()
          c:transaction(function(tx)
            assert(tx:query("INSERT INTO cx VALUES (1)"))
            tx:query("SELECT pg_sleep(30)")
          end)
        end)
        loom.sleep(0.2)
        t:cancel()
        assert.is_false(pcall(t.await, t))
        assert.are.equal(0, c:query("SELECT count(*) AS n FROM cx")[1].n)
        assert.are.equal("idle", c:_txstatus())
      end, 10)
    end)
  end)

  describe("cancellation", function()
    local function sleepers()
      return admin("SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(%' AND state = 'active'")[1].n
    end

    it("stops the query on the server when its task is cancelled; the connection goes on", function()
      with_conn(function(c)
        local t = loom.spawn(function() return c:query("SELECT pg_sleep(30)") end)
        loom.sleep(0.2)
        assert.are.equal(1, sleepers())
        local t0 = loom.now()
        t:cancel("enough")
        local ok, err = pcall(t.await, t)
        assert.is_false(ok)
        assert.are.equal("enough", tostring(err.reason or err))
        assert.are.equal(42, c:query("SELECT 42 AS x")[1].x)
        assert.is_true(loom.now() - t0 < helper.upper(0, 1))
        assert.are.equal(0, sleepers())
      end, 10)
    end)

    it("stops it on a loom.timeout while other tasks' queries on the pool go on", function()
      run(function()
        local pool = pg.pool { srv.conninfo, max = 4 }
        local done = 0
        local others = loom.spawn(function()
          for i = 1, 100 do
            assert.are.equal(i, pool:query("SELECT $1::int AS v", i)[1].v)
            done = done + 1
          end
        end)
        local t0 = loom.now()
        local ok, why = loom.timeout(0.3, function() return pool:query("SELECT pg_sleep(30)") end)
        assert.are.same({ false, "timeout" }, { ok, why })
        assert.is_true(loom.now() - t0 < helper.upper(0.3, 1))
        others:await()
        assert.are.equal(100, done)
        loom.sleep(0.1)
        assert.are.equal(0, sleepers())
        assert.are.equal(1, pool:query("SELECT 1 AS x")[1].x)
        pool:close()
      end, 10)
    end)

    it("a task cancelled while waiting for its turn leaves the others their turns", function()
      with_conn(function(c)
        local busy = loom.spawn(function() return c:query("SELECT pg_sleep(0.2), 1 AS a") end)
        local waiting = loom.spawn(function() return c:query("SELECT 2 AS b") end)
        local third = loom.spawn(function() return c:query("SELECT 3 AS c") end)
        loom.sleep(0.05)
        waiting:cancel()
        assert.are.equal(1, busy:await()[1].a)
        assert.are.equal(3, third:await()[1].c)
        assert.is_false(pcall(waiting.await, waiting))
      end)
    end)

    it("closing the connection wakes its waiters with closed", function()
      run(function()
        local c = assert(pg.connect(srv.conninfo))
        local q = loom.spawn(function() return c:query("SELECT pg_sleep(30)") end)
        local w = loom.spawn(function() return c:query("SELECT 1") end)
        assert(c:listen("chan"))
        local l = loom.spawn(function()
          local n = 0
          for _ in c:notifications() do n = n + 1 end
          return n
        end)
        loom.sleep(0.1)
        c:close()
        assert.are.same({ nil, "closed", "ECLOSED" }, { q:await() })
        assert.are.same({ nil, "closed", "ECLOSED" }, { w:await() })
        assert.are.equal(0, l:await())
      end)
    end)
  end)

  describe("LISTEN/NOTIFY", function()
    it("delivers notifications in order with their payload and the sender's pid", function()
      run(function()
        local listener = assert(pg.connect(srv.conninfo))
        local sender = assert(pg.connect(srv.conninfo))
        assert(listener:listen("jobs"))
        assert(listener:listen('odd "name"'))
        local got = {}
        local t = loom.spawn(function()
          for channel, payload, pid in listener:notifications() do
            got[#got + 1] = { channel, payload, pid }
            if #got == 4 then return end
          end
        end)
        for i = 1, 3 do assert(sender:query("SELECT pg_notify('jobs', $1)", "job " .. i)) end
        assert(sender:exec([[NOTIFY "odd ""name""", 'x']]))
        t:await()
        local pid = sender:pid()
        assert.are.same({ { "jobs", "job 1", pid }, { "jobs", "job 2", pid }, { "jobs", "job 3", pid },
          { 'odd "name"', "x", pid } }, got)
        listener:close()
        sender:close()
      end)
    end)

    it("ends the iteration when the server goes away under a LISTEN", function()
      run(function()
        local listener = assert(pg.connect(srv.conninfo))
        assert(listener:listen("restart"))
        local t = loom.spawn(function()
          local n = 0
          for _ in listener:notifications() do n = n + 1 end
          return n
        end)
        loom.sleep(0.05)
        admin("SELECT pg_terminate_backend($1)", listener:pid())
        assert.are.equal(0, t:await())
        assert.are.equal("broken", listener:status())
        local rows, err, code = listener:query("SELECT 1")
        assert.is_nil(rows)
        assert.are.equal("08006", code)
        assert.are.equal("string", type(err))
        listener:close()
      end)
    end)
  end)

  describe("pool", function()
    it("runs 1,000 tasks on 10 connections, never more", function()
      run(function()
        local info = srv.conninfo .. " application_name=pool1000"
        local pool = pg.pool { info, max = 10 }
        local most, watching = 0, true
        local watcher = loom.spawn(function()
          local mon = assert(pg.connect(srv.super))
          while watching do
            local n = mon:query("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'pool1000'")[1].n
            most = math.max(most, n)
            loom.sleep(0.01)
          end
          mon:close()
        end)
        local sum = 0
        do
          local g <close> = loom.group()
          for i = 1, 1000 do
            g:spawn(function()
              local r = assert(pool:query("SELECT $1::int AS v, pg_sleep(0.001)", i))
              sum = sum + r[1].v
              assert.is_true(pool:stats().open <= 10)
            end)
          end
        end
        watching = false
        watcher:await()
        assert.are.equal(500500, sum)
        assert.is_true(most >= 2 and most <= 10, most)
        assert.are.equal(10, pool:stats().max)
        pool:close()
        assert.are.equal(0, pool:stats().idle)
        assert.are.same({ nil, "closed", "ECLOSED" }, { pool:query("SELECT 1") })
      end, 30)
    end)

    it("acquire gives a connection back on close and at the end of a <close> scope", function()
      run(function()
        local pool = pg.pool { conninfo = srv.conninfo, max = 1 }
        do
          local c <close> = assert(pool:acquire())
          assert(c:exec("CREATE TEMP TABLE mine (x int)"))
          assert(c:query("INSERT INTO mine VALUES (1)"))
          assert.are.equal(1, c:query("SELECT count(*) AS n FROM mine")[1].n)
        end
        local c = assert(pool:acquire())
        -- the same session: the temp table is still there
        assert.are.equal(1, c:query("SELECT count(*) AS n FROM mine")[1].n)
        c:close()
        assert.has_error(function() c:query("SELECT 1") end, "this connection was returned to the pool")
        c:close() -- twice is fine
        pool:close()
      end)
    end)

    it("bounds the wait for a connection with timeout", function()
      run(function()
        local pool = pg.pool { srv.conninfo, max = 1, timeout = 0.1 }
        local held = assert(pool:acquire())
        local t0 = loom.now()
        assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { pool:query("SELECT 1") })
        local took = loom.now() - t0
        assert.is_true(took >= 0.1 and took < helper.upper(0.1, 0.3), took)
        held:close()
        assert.are.equal(1, pool:query("SELECT 1 AS x")[1].x)
        pool:close()
      end)
    end)

    it("discards a connection left in a transaction or broken, not handing it out", function()
      run(function()
        local pool = pg.pool { srv.conninfo, max = 2 }
        local c = assert(pool:acquire())
        local pid = c:pid()
        assert(c:exec("BEGIN"))
        c:close() -- given back inside a transaction: closed, not reused
        assert.are_not.equal(pid, pool:query("SELECT pg_backend_pid() AS p")[1].p)
        local c2 = assert(pool:acquire())
        local pid2 = c2:pid()
        c2:close()
        admin("SELECT pg_terminate_backend($1)", pid2)
        loom.sleep(0.05)
        local rows = assert(pool:query("SELECT pg_backend_pid() AS p"))
        assert.are_not.equal(pid2, rows[1].p)
        pool:close()
      end)
    end)

    it("transaction commits, or rolls back and re-raises", function()
      run(function()
        local pool = pg.pool { srv.conninfo, max = 2 }
        assert(pool:query("CREATE TABLE ptx (id int)"))
        assert.are.equal("ok", pool:transaction(function(c) assert(c:query("INSERT INTO ptx VALUES (1)")); return "ok" end))
        local ok, err = pcall(pool.transaction, pool, function(c)
          assert(c:query("INSERT INTO ptx VALUES (2)"))
          error("nope", 0)
        end)
        assert.are.same({ false, "nope" }, { ok, err })
        assert.are.equal(1, pool:query("SELECT count(*) AS n FROM ptx")[1].n)
        assert.are.equal(2, pool:stats().max)
        pool:close()
      end)
    end)

    it("checks its arguments", function()
      assert.has_error(function() pg.pool() end, "bad argument #1 to 'pool' (table expected, got nil)")
      assert.has_error(function() pg.pool {} end, "bad argument #1 to 'pool' (conninfo must be a string)")
      assert.has_error(function() pg.pool { "x", max = 0 } end, "bad argument #1 to 'pool' (max must be a positive integer)")
    end)

    it("goes on after the server restarts under it", function()
      run(function()
        local pool = pg.pool { srv.conninfo, max = 3 }
        do
          local g <close> = loom.group()
          for i = 1, 3 do g:spawn(function() assert(pool:query("SELECT $1::int, pg_sleep(0.05)", i)) end) end
        end
        assert.are.equal(3, pool:stats().idle)
        local listener = assert(pg.connect(srv.conninfo))
        assert(listener:listen("during_restart"))
        local heard = loom.spawn(function()
          local n = 0
          for _ in listener:notifications() do n = n + 1 end
          return n
        end)
        local _, code = loom.process.run { "sh", "-c", srv.restart_cmd }
        assert.are.equal(0, code)
        -- the LISTEN ended with the server: the iteration is over, the connection broken
        assert.are.equal(0, heard:await())
        assert.are.equal("broken", listener:status())
        listener:close()
        local failures = 0
        for i = 1, 10 do
          local rows, _, sqlstate = pool:query("SELECT $1::int AS v", i)
          if rows then
            assert.are.equal(i, rows[1].v)
          else
            failures = failures + 1
            assert.are.equal("08006", sqlstate)
          end
        end
        assert.is_true(failures <= 1, failures)
        pool:close()
      end, 30)
    end)
  end)
end)
