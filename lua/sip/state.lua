--- What the modules of sip share about each user agent (private): its
-- settings from `sip.ua{}` and its handlers, in tables keyed weakly by
-- the UA, and the check every UA method starts with. sip (init.lua),
-- sip.call and sip.register require it.
-- @module sip.state
-- @local

local core = require "sip.core"
local check = require "sip.check"

local function per_ua() return setmetatable({}, { __mode = "k" }) end

local M = {
  handlers = per_ua(),      -- ua -> { [method] = fn }; nil once closed
  proxies = per_ua(),       -- ua -> sip.ua{proxy}
  auth = per_ua(),          -- ua -> sip.ua{auth}
  media = per_ua(),         -- ua -> sip.ua{media}
  contacts = per_ua(),      -- ua -> our Contact: sip.ua{contact}, or a registration's public one
  keepalive = per_ua(),     -- ua -> sip.ua{keepalive}
  event_queues = per_ua(),  -- ua -> its ua:events() queue
  session_timer = per_ua(), -- ua -> sip.ua{session_timer}
}

--- self must be an open sip.UA; errors name `fname` at the caller's line.
function M.check_ua(self, fname)
  check.self(self, core.UA, "sip.UA", fname, 3)
  if not M.handlers[self] then
    error("bad self to '" .. fname .. "' (the user agent is closed)", 3)
  end
  return self
end

return M
