--- The one seam through which Lua adds methods to the classes made in C
-- (sip.UA, sip.Call, sip.Message, ...), as cqueues' `interpose` does:
-- every method a Lua module adds goes through here, and the method it
-- replaces, if any, is returned to be called from the new one.
-- @module sip.class
-- @local

local M = {}

--- Set `name` on the class `mt` (a metatable from sip.core) to `fn`.
-- @tparam table mt the class: its `methods` table, else its `__index`
-- @string name
-- @func fn
-- @return the method it replaces, or nil
function M.interpose(mt, name, fn)
  local methods = type(mt.methods) == "table" and mt.methods or mt.__index
  assert(type(methods) == "table", "interpose: not a class")
  local old = rawget(methods, name)
  methods[name] = fn
  return old
end

--- A table whose fields assigned become methods of `mt` (through
-- interpose): `local Call = class.methods(core.Call)` then
-- `function Call:hangup() ... end`. Reading gives the method in place.
function M.methods(mt)
  local methods = type(mt.methods) == "table" and mt.methods or mt.__index
  return setmetatable({}, {
    __index = methods,
    __newindex = function(_, name, fn) M.interpose(mt, name, fn) end,
  })
end

return M
