-- Loaded by busted before the specs (.busted: helper). busted keeps only
-- the last `finally` a test registers, so a test that closed its user
-- agents in one and undid sip.trace in another left the agents open, and
-- a later sip.run waited on them. Here every `finally` of a test runs,
-- the last registered first (as deferred cleanups do); an error in one
-- does not skip the others and is raised once all have run.
local busted = require "busted"

busted.subscribe({ "test", "start" }, function(element)
  local env = element.env
  local set = env and env.finally
  if not set then return nil, true end
  local fns = {}
  env.finally = function(fn)
    fns[#fns + 1] = fn
    if #fns == 1 then
      set(function()
        local first
        for i = #fns, 1, -1 do
          local ok, err = pcall(fns[i])
          if not ok and first == nil then first = err end
        end
        if first ~= nil then error(first, 0) end
      end)
    end
  end
  return nil, true
end)

return true
