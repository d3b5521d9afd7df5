-- A bank account shared by 100 concurrent tasks: each deposit and withdrawal
-- reads the balance, waits (the "database round trip"), then writes it back.
-- Without the lock, updates overwrite each other; with it, the books balance.
local loom = require "loom"
local SCALE = tonumber(os.getenv("LOOM_EXAMPLE_SCALE")) or 1

local function run_bank(use_lock)
  local account = { balance = 1000 }
  local lock = loom.lock()
  local function change(amount)
    local guard <close> = use_lock and lock:acquire() or nil
    local seen = account.balance
    loom.sleep(0.001 * SCALE) -- another task may run here
    account.balance = seen + amount
  end
  local tasks = {}
  for i = 1, 50 do
    tasks[#tasks + 1] = loom.spawn(change, 10)  -- +500 in total
    tasks[#tasks + 1] = loom.spawn(change, -i)  -- -1275 in total
  end
  for _, t in ipairs(tasks) do t:await() end
  return account.balance
end

loom.run(function()
  local t0 = loom.now()
  print(string.format("expected balance: %d", 1000 + 500 - 1275))
  print(string.format("without a lock:   %d  (lost updates)", run_bank(false)))
  print(string.format("with a lock:      %d", run_bank(true)))
  print(string.format("took %.2fs", loom.now() - t0))
end)
