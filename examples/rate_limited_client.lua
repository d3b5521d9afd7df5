-- The classic client pattern: fetch 20 URLs at most 40 a second (a burst
-- of 5 at once, then paced by a token bucket, loom.rate_limit) and at most
-- 5 in flight, each with a timeout and retried when the connection fails
-- (loom.retry), reporting the failures without stopping the others. A
-- local server stands in for the remote API: some items are slow, one is
-- missing and one takes longer than the client's timeout.
local loom = require "loom"

local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1
local LIMIT, TIMEOUT = 5, 1.0 * SCALE
local RATE, BURST = 40 / SCALE, 5

loom.run(function()
  local server = assert(loom.http.serve("127.0.0.1", 0, function(req)
    local n = tonumber(req.path:match("^/items/(%d+)$"))
    if not n or n == 13 then return 404, {}, "not found" end
    loom.sleep((n == 17 and 3 or 0.2 + (n % 3) * 0.1) * SCALE) -- 17 is far too slow
    return 200, { ["Content-Type"] = "text/plain" }, "item " .. n
  end))
  local _, port = server:address()

  local t0 = loom.now()
  local limit, pace = loom.semaphore(LIMIT), loom.rate_limit(RATE, BURST)
  local in_flight, peak, last_start = 0, 0, 0
  local results = {}
  local function fetch(i)
    local _ <close> = limit:acquire()
    pace:acquire()
    last_start = loom.now() - t0
    in_flight = in_flight + 1
    peak = math.max(peak, in_flight)
    -- a refused or reset connection is worth another try; a timeout or an HTTP error is not
    local res, err = loom.retry(function()
      return loom.http.get(("http://127.0.0.1:%d/items/%d"):format(port, i), { timeout = TIMEOUT })
    end, { attempts = 3, retry_on = function(_, code) return code == "ECONNREFUSED" or code == "ECONNRESET" end })
    in_flight = in_flight - 1
    if not res then
      results[i] = "failed: " .. err
    elseif res.status ~= 200 then
      results[i] = "failed: HTTP " .. res.status
    else
      results[i] = res.body
    end
    print(("%5.2fs  %2d  %s"):format(loom.now() - t0, i, results[i]))
  end

  local tasks = {}
  for i = 1, 20 do tasks[i] = loom.spawn(fetch, i) end
  for _, t in ipairs(tasks) do t:await() end

  local failed = 0
  for i = 1, 20 do if results[i]:find("^failed") then failed = failed + 1 end end
  print(("%5.2fs  done: %d fetched, %d failed, at most %d in flight"):format(
    loom.now() - t0, 20 - failed, failed, peak))
  print(("paced: the last of 20 requests started at %.3fs (%g a second after a burst of %d)"):format(
    last_start, RATE, BURST))
  loom.http.close_idle()
  server:close(0)
end)
