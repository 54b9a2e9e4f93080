-- wrk script: every request carries a key never sent before (X-Flood: thread-counter), to
-- flood a rate limit keyed on that header. Reports through report.lua, next to this file.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local next_id = 0
setup = function(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
end

local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, { ["X-Flood"] = id .. "-" .. counter })
end
