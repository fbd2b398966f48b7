-- Shared by get/filter/patch: the users loaded before the run, one "id name" per line of WRK_IDS; each
-- wrk thread walks them from its own offset.
local ids, names = {}, {}
for line in io.lines(os.getenv("WRK_IDS")) do
  local id, name = line:match("^(%S+) (%S+)$")
  ids[#ids + 1], names[#names + 1] = id, name
end
local threads = 0
function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end
turn = 0
function pick()
  turn = turn + 1
  local i = ((thread_id * 7919 + turn * 104729) % #ids) + 1
  return ids[i], names[i]
end
