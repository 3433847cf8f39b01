--- Changes to a call's session without a re-INVITE: `call:update` (RFC
-- 3311). Incoming UPDATEs are answered by the call itself (lua/sip/call.lua,
-- the "update" hook). Loaded by sip (init.lua); not required directly.
-- @module sip

local core = require "sip.core"
local class = require "sip.class"
local check = require "sip.check"
local sdp = require "sip.sdp"
local media = require "sip.media"

local Call = class.methods(core.Call)
local CallMT = core.Call

local UPDATE_OPTS = { sdp = "string", headers = "table", timeout = "number" }

--- @type Call

--- Send an UPDATE (RFC 3311) with a new offer, and take the answer: on
-- a 2xx `local_sdp` becomes the offer and `remote_sdp` the answer (the
-- RTP session follows); on a failure nothing changes. Unlike a
-- re-INVITE it needs no ACK and works before the call is answered too
-- (in an early dialog, once the peer allows UPDATE). Without `sdp` it
-- refreshes the session (no offer: a session timer's refresh).
-- @tab[opt] opts `sdp` (the offer), `headers`, `timeout`
-- @treturn Message the 2xx
-- @return[2] nil
-- @treturn[2] string `"491 Request Pending"`, `"488 Not Acceptable Here"`,
-- `"timeout"`, `"call is STATE"`...
-- @treturn[2] ?Message the response, when there was one
function Call:update(opts)
  check.self(self, CallMT, "sip.Call", "call:update")
  opts = check.opts(opts, "call:update", 1, UPDATE_OPTS)
  if self.state == "ended" or self.state == "terminating" then
    return nil, "call is " .. self.state
  end
  local res, err = self:request("UPDATE", { body = opts.sdp, content_type = opts.sdp and "application/sdp",
                                            headers = opts.headers, timeout = opts.timeout })
  if not res then return nil, err end
  if res.status < 200 or res.status >= 300 then
    return nil, res.status .. " " .. (res.reason or ""), res
  end
  if opts.sdp then
    self.local_sdp = opts.sdp
    self._session = nil       -- hold/unhold start from this SDP
    if res.body ~= "" then
      self.remote_sdp = nil
      self._remote_sdp_text = res.body
      if self.media then media.apply(self.media, res.body, sdp.parse(opts.sdp)) end
    end
  end
  return res
end

return {}
