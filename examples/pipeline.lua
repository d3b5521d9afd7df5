-- A pipeline of two processes, as `seq 1 10000 | sort -rn | head`... built
-- by hand: the first one's output is copied into the second one's input by a
-- task, while the result is read.
local loom = require "loom"

loom.run(function()
  local producer = assert(loom.process.spawn{ "seq", "1", "10000", stdout = "pipe" })
  local sorter = assert(loom.process.spawn{ "sort", "-rn", stdin = "pipe", stdout = "pipe" })
  local copier = loom.spawn(function()
    local from <close> = producer.stdout
    local to <close> = sorter.stdin
    for chunk in function() return (from:read()) end do to:write(chunk) end
  end)
  local result <close> = sorter.stdout
  local first = {}
  for line in result:lines() do
    if #first < 3 then first[#first + 1] = line end
  end
  copier:await()
  print("largest three: " .. table.concat(first, ", "))
  print(("producer exited %s, sorter exited %s"):format(producer:wait(), sorter:wait()))
end)
