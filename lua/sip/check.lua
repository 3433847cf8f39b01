--- Argument checks at the edge of the public API: an unknown option, a
-- wrong type or a closed object raises an error that names the public
-- function and the option, at the caller's line. Private module.
-- @module sip.check

local error, type, pairs, tostring, getmetatable =
      error, type, pairs, tostring, getmetatable

local M = {}

--- The options table of a call that got none: read-only, so a function
-- can never write into a table shared by every call.
M.EMPTY = setmetatable({}, { __newindex = function() error("options are read-only", 2) end })

-- "string|table" -> "a string or a table", once per spec string
local wanted = setmetatable({}, { __index = function(t, spec)
  local words = {}
  for w in spec:gmatch("[^|]+") do words[#words + 1] = (w:match("^[aeiou]") and "an " or "a ") .. w end
  local s = table.concat(words, " or ")
  t[spec] = s
  return s
end })

local function matches(spec, v)
  local tv = type(v)
  if spec == tv then return true end
  -- "integer" is a number with no fraction
  for w in spec:gmatch("[^|]+") do
    if w == tv or (w == "integer" and math.type(v) == "integer") or w == "any" then return true end
  end
  return false
end

--- Check an options table against `spec` (name -> "string", "number",
-- "table|string", ...): returns opts, or M.EMPTY for nil.
-- @param opts the table a user passed
-- @string fname the public function, e.g. "ua:request"
-- @int argn its position in the user's call
-- @tab spec allowed names and types
-- @int[opt=2] level 1 + how deep the check runs below the public function
function M.opts(opts, fname, argn, spec, level)
  if opts == nil then return M.EMPTY end
  level = (level or 2) + 1
  if type(opts) ~= "table" then
    error("bad argument #" .. argn .. " to '" .. fname .. "' (table expected, got " ..
          type(opts) .. ")", level)
  end
  for k, v in pairs(opts) do
    local want = spec[k]
    if not want then
      error("bad argument #" .. argn .. " to '" .. fname .. "' (unknown option '" ..
            tostring(k) .. "')", level)
    end
    if not matches(want, v) then
      error("bad argument #" .. argn .. " to '" .. fname .. "' (option '" .. k .. "' must be " ..
            wanted[want] .. ", got " .. type(v) .. ")", level)
    end
  end
  return opts
end

--- The options named in `names` that are strings must be one line each:
-- they go into header values, where CR or LF would start a header of the
-- caller's choosing.
function M.lines(opts, fname, argn, names, level)
  for _, k in ipairs(names) do
    local v = opts[k]
    if type(v) == "string" and v:find("[\r\n%z]") then
      error("bad argument #" .. argn .. " to '" .. fname .. "' (option '" .. k ..
            "' must be one line: no CR, LF or NUL)", (level or 2) + 1)
    end
  end
  return opts
end

--- Raise "bad argument #argn to 'fname' (msg)" at the user's line.
function M.arg(argn, fname, msg, level)
  error("bad argument #" .. argn .. " to '" .. fname .. "' (" .. msg .. ")", (level or 2) + 1)
end

--- Check that `v` has type `want` ("string", "number|nil", ...).
function M.type(v, want, argn, fname, level)
  if not matches(want, v) then
    M.arg(argn, fname, wanted[want] .. " expected, got " .. type(v), (level or 2) + 1)
  end
  return v
end

--- Check self: `mt` its metatable, `name` the class ("sip.UA").
function M.self(self, mt, name, fname, level)
  if getmetatable(self) ~= mt then
    error("bad self to '" .. fname .. "' (" .. name .. " expected, got " ..
          (type(self) == "table" and getmetatable(self) and getmetatable(self).__name or type(self)) ..
          "; call it with ':')", (level or 2) + 1)
  end
  return self
end

return M
