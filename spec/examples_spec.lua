local helper = require "helper"

-- Runs an example with its durations scaled down by 10 and returns its output.
local function example(name)
  local out, code = helper.lua(nil, { file = "examples/" .. name .. ".lua", env = "LOOM_EXAMPLE_SCALE=0.1" })
  assert.are.equal(0, code, out)
  return out
end

local function times(out, pattern)
  local t = {}
  for secs in out:gmatch("(%d+%.%d+)s%s+" .. pattern) do t[#t + 1] = tonumber(secs) end
  return t
end

-- Checks an example's "N answered, M failed" count: many answered, none failed.
local function all_answered(out, pattern)
  local ok, failed = out:match(pattern)
  assert(ok, out)
  assert.are.equal("0", failed, out)
  assert.is_true(tonumber(ok) > 100, out)
end

describe("examples", function()
  it("ws_chat.lua broadcasts every message to everyone in the room", function()
    local out = example("ws_chat")
    for _, who in ipairs({ "ada", "bob", "cy" }) do
      local block = out:match(who .. " heard %d+ messages:\n(.-)\n%a+ heard") or out:match(who .. " heard %d+ messages:\n(.*)$")
      assert(block, out)
      assert.matches("ada: hello all", block, 1, true)
      assert.matches("bob: hi ada", block, 1, true)
      assert.matches("ada: bye", block, 1, true)
    end
  end)

  it("workers.lua reloads and stops its workers without a failed request", function()
    local out = example("workers")
    assert.matches("reloading (SIGHUP) while requests go on", out, 1, true)
    all_answered(out, "(%d+) requests answered, (%d+) failed; the slow one: hello from worker %d")
    assert.matches("answered by: hello from worker 1, hello from worker 2", out, 1, true)
    assert.matches("all workers stopped cleanly", out, 1, true)
  end)

  it("load_balanced.lua stops and restarts a server behind HAProxy with no failed request", function()
    local out = example("load_balanced")
    assert.matches("server A stopped, exit status 0", out, 1, true)
    all_answered(out, "(%d+) requests through HAProxy, (%d+) failed")
    assert.matches("servers stopped, exit statuses 0 0", out, 1, true)
  end)

  it("web_app.lua serves its page, its JSON API and live updates by server-sent events", function()
    local out = example("web_app")
    assert.matches('GET / %-> 200 text/html; charset=utf%-8, %d+ bytes, title "loom board"', out)
    assert.matches('POST /api/messages "" -> 400 {"error":"a message needs a text"}', out, 1, true)
    for i, text in ipairs({ "hello", "anyone here?", "bye" }) do
      assert.matches(('event %d: {"'):format(i), out, 1, true)
      assert.matches(('"text":"%s"'):format(text), out, 1, true)
    end
    assert.matches("GET /api/messages -> 3 messages", out, 1, true)
  end)

  it("ws_feed.lua follows the feed to its close", function()
    local out = example("ws_feed")
    local _, updates = out:gsub("#%d+", "")
    assert.are.equal(10, updates, out)
    assert.matches("#10  100%.00", out)
    assert.matches("feed closed: 1000 market closed", out, 1, true)
  end)

  it("https.lua serves and fetches over verified TLS", function()
    local out = example("https")
    assert.matches("hello over TLS, /a\nhello over TLS, /b\nhello over TLS, /c\n", out, 1, true)
    assert.matches("without the test CA:\tECERT\tcertificate verify failed", out, 1, true)
    assert.matches("TLSv1%.3 %S+, certificate CN=localhost issued by CN=loom test CA", out)
  end)

  it("fetch.lua runs three fetches concurrently", function()
    local out = example("fetch")
    local starts, dones = times(out, "start"), times(out, "done ")
    assert.are.equal(3, #starts)
    assert.are.equal(3, #dones)
    for _, s in ipairs(starts) do assert.is_true(s < helper.upper(0, 0.05)) end
    for _, d in ipairs(dones) do assert.is_true(d >= 0.19 and d < helper.upper(0.19, 0.35), out) end
    local total = assert(tonumber(out:match("(%d+%.%d+)s  all 3 fetches done")))
    assert.is_true(total < helper.upper(0, 0.35), out)
  end)

  it("bank_lock.lua keeps the balance right only with the lock", function()
    local out = example("bank_lock")
    assert.matches("expected balance: 225", out, 1, true)
    assert.matches("with a lock:      225", out, 1, true)
    local without = tonumber(out:match("without a lock:%s+(%-?%d+)"))
    assert.is_not.equal(225, without)
  end)

  it("semaphore_limit.lua runs ten fetches three at a time in four rounds", function()
    local out = example("semaphore_limit")
    local events = {}
    for secs, what in out:gmatch("(%d+%.%d+)s  (%a+)%s+fetch") do events[#events + 1] = { tonumber(secs), what } end
    assert.are.equal(20, #events)
    local active, peak = 0, 0
    for _, e in ipairs(events) do
      active = active + (e[2] == "start" and 1 or -1)
      peak = math.max(peak, active)
    end
    assert.are.equal(3, peak)
    local total = tonumber(out:match("(%d+%.%d+)s  all 10 done"))
    assert.is_true(total >= 0.4 and total < helper.upper(0.4, 0.55), out)
  end)

  it("event_release.lua releases three waiters together", function()
    local out = example("event_release")
    local set = tonumber(out:match("(%d+%.%d+)s  starter sets the event"))
    local released = times(out, "runner %a released")
    assert.is_true(set >= 0.1)
    assert.are.equal(3, #released)
    for _, r in ipairs(released) do assert.is_true(r - set < helper.upper(0, 0.02)) end
  end)

  it("producer_consumer.lua moves 12 items through a queue of 5 and shuts down", function()
    local out = example("producer_consumer")
    local handled = 0
    for _ in out:gmatch("handled [pq]%d") do handled = handled + 1 end
    assert.are.equal(12, handled)
    for size in out:gmatch("queue size (%d+)") do assert.is_true(tonumber(size) <= 5) end
    assert.matches("all 12 items handled; closing the queue", out, 1, true)
    assert.matches("consumers stopped after 12 items", out, 1, true)
  end)

  it("gather.lua gathers 1, 1.5 and 0.5 s fetches in about 1.5 s, in argument order", function()
    local out = example("gather")
    assert.matches("gathered: users data, posts data, tags data", out, 1, true)
    local arrived = {}
    for secs, name in out:gmatch("(%d+%.%d+)s  (%a+) arrived") do arrived[#arrived + 1] = name end
    assert.are.same({ "tags", "users", "posts" }, arrived)
    local total = tonumber(out:match("(%d+%.%d+)s  gathered"))
    assert.is_true(total >= 0.15 and total < helper.upper(0.15, 0.25), out)
  end)

  it("all_settled.lua reports the two successes and the failure", function()
    local out = example("all_settled")
    assert.matches("#1 succeeded: alpha ok", out, 1, true)
    assert.matches("#2 failed: beta returned 503", out, 1, true)
    assert.matches("#3 succeeded: gamma ok", out, 1, true)
  end)

  it("as_completed.lua prints the fastest first", function()
    local out = example("as_completed")
    local order = {}
    for name in out:gmatch("(%a+) finished") do order[#order + 1] = name end
    assert.are.same({ "fast", "medium", "slow" }, order)
  end)

  it("cancel_cleanup.lua cancels a long task and waits for its cleanup", function()
    local out = example("cancel_cleanup")
    local cancel_at = tonumber(out:match("(%d+%.%d+)s %s+main cancels the worker"))
    local cleaned_at = tonumber(out:match("(%d+%.%d+)s %s+worker cleanup done"))
    local ended_at = tonumber(out:match("(%d+%.%d+)s %s+worker ended: cancelled=true"))
    assert.matches("worker cleaning up after: cancelled: shutting down", out, 1, true)
    assert.is_true(cleaned_at - cancel_at >= 0.019)
    assert.is_true(ended_at >= cleaned_at)
    assert.is_nil(out:find("worker step 5", 1, true))
  end)

  it("timeout.lua cuts the slow operation and keeps the fast one", function()
    local out = example("timeout")
    assert.matches("fast operation: ok=true, result after 0.5s", out, 1, true)
    local cut = tonumber(out:match("slow operation: ok=false, timeout %(cut after (%d+%.%d+)s%)"))
    assert.is_true(cut >= 0.1 and cut < helper.upper(0.1, 0.2), out)
  end)

  it("walk.lua reports the ten largest files and the total of a tree", function()
    local root = os.tmpname()
    os.remove(root)
    local sizes, total = {}, 0
    for i = 1, 14 do
      local dir = root .. "/d" .. (i % 3) .. "/sub" .. (i % 2)
      os.execute("mkdir -p '" .. dir .. "'")
      local path = dir .. "/f" .. i .. ".bin"
      local h = assert(io.open(path, "wb"))
      h:write(("x"):rep(i * 100))
      h:close()
      sizes[#sizes + 1] = { path = path, size = i * 100 }
      total = total + i * 100
    end
    local out, code = helper.lua(nil, { file = "examples/walk.lua '" .. root .. "'" })
    os.execute("rm -rf '" .. root .. "'")
    assert.are.equal(0, code, out)
    assert.matches(("14 files in 10 directories, %d bytes in total"):format(total), out, 1, true)
    table.sort(sizes, function(a, b) return a.size > b.size end)
    local listed = {}
    for size, path in out:gmatch("\n%s+(%d+)  ([^\n]+)") do listed[#listed + 1] = { path = path, size = tonumber(size) } end
    assert.are.equal(10, #listed)
    for i = 1, 10 do assert.are.same(sizes[i], listed[i]) end
  end)

  it("echo.lua echoes lines over TCP", function()
    local out = example("echo")
    assert.matches("echo server listening on 127.0.0.1:%d+", out)
    for _, w in ipairs({ "hello", "concurrent", "world" }) do
      assert.matches("sent " .. w .. "%s+got " .. w:upper(), out)
    end
  end)

  it("chat.lua delivers each line to the other clients", function()
    local out = example("chat")
    assert.matches("ana    hears  bruno: hello ana", out, 1, true)
    assert.matches("bruno  hears  ana: hi all", out, 1, true)
    assert.matches("chen   hears  ana: hi all", out, 1, true)
    assert.matches("ana    hears  chen: bye", out, 1, true)
    assert.matches("bruno  hears  * chen left", out, 1, true)
    assert.is_nil(out:find("ana    hears  ana:", 1, true)) -- nobody hears themselves
  end)

  it("many_connections.lua answers 1,000 requests, at most 50 at a time", function()
    local out = example("many_connections")
    assert.matches("1000 of 1000 requests answered, at most 50 connections at once", out, 1, true)
  end)

  it("udp_ping.lua pings and times out on silence", function()
    local out = example("udp_ping")
    for i = 1, 5 do assert.matches("ping " .. i .. ": pong " .. i .. " in", out, 1, true) end
    assert.matches("unanswered ping:\ttimeout\tETIMEDOUT", out, 1, true)
  end)

  it("json_api.lua serves its routes with the right statuses and JSON", function()
    local out = example("json_api")
    assert.matches('POST   /todos    -> 201 {"', out, 1, true)
    assert.matches('POST   /todos    -> 400 {"error":"invalid JSON: ', out, 1, true)
    assert.matches('"count":2', out, 1, true)
    assert.matches("DELETE /todos/1  -> 204", out, 1, true)
    assert.matches('GET    /todos/1  -> 404 {"error":"no todo 1"}', out, 1, true)
    assert.matches('GET    /todos/2  -> 200 {"', out, 1, true)
    assert.matches('GET    /nowhere  -> 404 {"error":"not found"}', out, 1, true)
  end)

  it("rate_limited_client.lua paces its requests, keeps 5 in flight and reports failures without stopping", function()
    local out = example("rate_limited_client")
    -- 400 a second at this scale after a burst of 5: the 20th starts 15 / 400 s in, or later
    local last = tonumber(out:match("the last of 20 requests started at (%d+%.%d+)s"))
    assert(last and last >= 0.037, out)
    local lines = 0
    for _ in out:gmatch("%d+%.%d+s%s+%d+  ") do lines = lines + 1 end
    assert.are.equal(20, lines, out)
    assert.matches("13  failed: HTTP 404", out, 1, true)
    assert.matches("17  failed: timeout", out, 1, true)
    assert.matches("done: 18 fetched, 2 failed, at most 5 in flight", out, 1, true)
    -- 20 fetches of 0.02-0.04 s five at a time, and one 0.1 s timeout
    local total = tonumber(out:match("(%d+%.%d+)s  done"))
    assert(total > 0.09 and total < helper.upper(0.09, 0.45), out)
  end)

  it("sequential_vs_concurrent.lua takes 6 units one way and 2 the other", function()
    local out = example("sequential_vs_concurrent")
    local seq = tonumber(out:match("(%d+%.%d+)s  sequential"))
    local con = tonumber(out:match("(%d+%.%d+)s  concurrent"))
    assert(seq >= 0.59 and seq < helper.upper(0.59, 0.75), out)
    assert(con >= 0.19 and con < helper.upper(0.19, 0.3), out)
  end)

  it("background_task.lua beats while the main work goes on, then cleans up", function()
    local out = example("background_task")
    local beats = tonumber(out:match("heartbeat stopped after (%d+) beats"))
    assert(beats >= 3 and beats <= 5, out)
    assert.matches("main work step 3 done", out, 1, true)
    assert(out:find("heartbeat 1", 1, true) < out:find("main work step 1", 1, true), out)
    assert.matches("done; the heartbeat ended cancelled", out, 1, true)
  end)

  it("wait_errors.lua inspects each finished task's error and cancels the pending one", function()
    local out = example("wait_errors")
    assert.matches("4 done, 1 still pending", out, 1, true)
    assert.matches("upload       failed: upload: connection reset\n", out, 1, true)
    assert.matches("notify       failed: notify: mail server refused\n", out, 1, true)
    assert.matches("resize       resize ok", out, 1, true)
    assert.matches("slow-report  still running: cancelled", out, 1, true)
    local t = tonumber(out:match("(%d+%.%d+)s  4 done"))
    assert(t >= 0.09 and t < helper.upper(0.09, 0.2), out)
  end)

  it("context_manager.lua closes the resource on success, error and cancellation", function()
    local out = example("context_manager")
    for i = 1, 3 do
      assert(out:find("conn-" .. i .. " open", 1, true) < out:find("conn-" .. i .. " closed", 1, true), out)
    end
    assert(out:find("conn-2 closed", 1, true) < out:find("caught: query failed: bad", 1, true), out)
    assert.matches("conn-3's task ended cancelled", out, 1, true)
  end)

  it("timing_scope.lua times each block, however it ends", function()
    local out = example("timing_scope")
    local one = tonumber(out:match("one sleep%s+(%d+%.%d+)s"))
    local three = tonumber(out:match("gather of three%s+(%d+%.%d+)s"))
    assert(one >= 0.03 and one < helper.upper(0.03, 0.08), out)
    assert(three >= 0.04 and three < helper.upper(0.04, 0.09), out)
    assert.matches("failing block%s+%d+%.%d+s %(ended by an error%)", out)
  end)

  it("async_iterators.lua loops over a number stream and lazily fetched pages", function()
    local out = example("async_iterators")
    for i = 1, 4 do assert.matches(("number %d, its square %d"):format(i, i * i), out, 1, true) end
    assert.matches("page 1: item1 item2 item3 item4", out, 1, true)
    assert.matches("page 3: item9 item10\n", out, 1, true)
    assert.matches("10 items in all", out, 1, true)
    local p1, p3 = tonumber(out:match("(%d+%.%d+)s  page 1")), tonumber(out:match("(%d+%.%d+)s  page 3"))
    assert(p3 - p1 >= 0.035, out) -- each page is its own request
  end)

  it("error_handling.lua catches errors, values and cancellation apart", function()
    local out = example("error_handling")
    assert.matches("call 1: reply 1", out, 1, true)
    assert.matches("call 2 failed: 503 service unavailable", out, 1, true)
    assert.matches("await re%-raised: false, examples/error_handling.lua:%d+: disk full", out)
    assert.matches("connect returned: nil, 127.0.0.1:1: connection refused, ECONNREFUSED", out, 1, true)
    assert.matches("the victim saw its cancellation: cancelled: not needed", out, 1, true)
    assert.matches("victim: cancelled", out, 1, true)
  end)

  it("blocking_offload.lua keeps ticking while a blocking call runs on a thread", function()
    local out = example("blocking_offload")
    local ticks = tonumber(out:match("(%d+) ticks meanwhile"))
    assert(ticks >= 7, out)
    assert.matches("slept 0.10 s on a worker thread", out, 1, true)
  end)

  it("connection_pool.lua serves 20 tasks over 3 shared connections", function()
    local out = example("connection_pool")
    for i = 1, 20 do assert.matches(("got 'echo request %d'"):format(i), out, 1, true) end
    assert.matches("20 requests over 3 connections (at most 3 in use at once)", out, 1, true)
    local total = tonumber(out:match("(%d+%.%d+)s  20 requests"))
    assert(total >= 0.06 and total < helper.upper(0.06, 0.2), out) -- 7 rounds of 10 ms on 3 connections
  end)

  it("debug_blocking.lua shows debug mode naming the blocking task", function()
    local out = example("debug_blocking")
    assert.matches("slow step: task 'worker' held the loop for %d+ ms %(resumed at examples/debug_blocking.lua:%d+, " ..
      "ran to examples/debug_blocking.lua:%d+; spawned at examples/debug_blocking.lua:%d+%)", out)
    assert.not_matches("task 'ticker' held", out)
    local t1, t2 = tonumber(out:match("(%d+%.%d+)s  tick 1")), tonumber(out:match("(%d+%.%d+)s  tick 2"))
    assert(t2 - t1 > 0.1, out) -- the tick after the blocking call came late
  end)

  it("read_file.lua reads a file line by line while a ticker keeps time", function()
    local out = example("read_file")
    assert.matches("read 30000 lines (0.6 MB), sum of the last column 14985000", out, 1, true)
    local late = tonumber(out:match("at most (%d+%.%d+) ms late"))
    assert(late < 20, out)
  end)

  it("redis_concurrent.lua runs redis-lua from 20 tasks at once over loom.socket", function()
    local out = example("redis_concurrent")
    local n, ms, visits = out:match("20 workers took (%d+) jobs in (%d+) ms; visits = (%d+)")
    assert.are.equal("20", n, out)
    assert.are.equal("20", visits, out)
    assert(tonumber(ms) < 1000, out) -- one after another, each waiting for its job, would take longer
  end)

  describe("on PostgreSQL", function()
    local srv
    setup(function() srv = helper.pg_server() end)
    teardown(function() if srv then srv.stop() end end)

    local function pg_example(name)
      local out, code = helper.lua(nil, { file = "examples/" .. name .. ".lua",
        env = "LOOM_PG='" .. srv.conninfo .. "'" })
      assert.are.equal(0, code, out)
      return out
    end

    it("pg_users.lua fetches 200 users concurrently, faster than one after another", function()
      local out = pg_example("pg_users")
      assert.matches("inserted 200 users in one batch", out, 1, true)
      assert.matches('fetched 200 users, user 42 is "user 42"', out, 1, true)
      local seq, n, conc = out:match("one after another: (%d+) ms; concurrently over (%d+) connections: (%d+) ms")
      assert.are.equal("5", n, out)
      assert(tonumber(seq) > 2 * tonumber(conc), out)
    end)

    it("pg_jobs.lua runs each of 12 jobs exactly once across 3 workers", function()
      local out = pg_example("pg_jobs")
      local seen = {}
      for w, id in out:gmatch("worker (%d) did job (%d+)") do
        assert.is_nil(seen[id], out)
        seen[id] = w
      end
      for id = 1, 12 do assert.is_not_nil(seen[tostring(id)], out) end
      assert.matches("12 jobs done", out, 1, true)
      assert.not_matches("jobs new", out)
    end)
  end)
end)
