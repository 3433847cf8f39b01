--- A call's session after the answer: `call:update` (RFC 3311), and
-- session timers (RFC 4028): Session-Expires and Min-SE negotiated both
-- ways, the refresher's UPDATE (or re-INVITE), BYE when a session is not
-- refreshed in time, 422 asked and followed. Incoming UPDATEs are
-- answered by the call itself (lua/sip/call.lua), which asks this module
-- for the headers of its answers. Loaded by sip (init.lua); not required
-- directly.
-- @module sip

local core = require "sip.core"
local sched = require "sip.sched"
local state = require "sip.state"
local class = require "sip.class"
local check = require "sip.check"
local sdp = require "sip.sdp"
local media = require "sip.media"

local Call = class.methods(core.Call)
local CallMT = core.Call
local current, wait, log = sched.current, sched.wait, sched.log

local M = {}

local UPDATE_OPTS = { sdp = "string", headers = "table", timeout = "number" }

--- @type Call

--- Send an UPDATE (RFC 3311) with a new offer, and take the answer: on
-- a 2xx `local_sdp` becomes the offer and `remote_sdp` the answer (the
-- RTP session follows); on a failure nothing changes. Unlike a
-- re-INVITE it needs no ACK. Without `sdp` it refreshes the session (no
-- offer: what a session timer's refresh sends).
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

-- Session timers (RFC 4028) ------------------------------------------------

local MIN_SE = 90               -- 4: no session shorter than this is asked or taken

-- "1800;refresher=uac" -> 1800, "uac" (or "")
local function parse_se(v)
  if not v then return nil end
  local n, params = v:match("^%s*(%d+)%s*(.*)$")
  if not n then return nil end
  return tonumber(n), (params:match(";%s*[Rr][Ee][Ff][Rr][Ee][Ss][Hh][Ee][Rr]%s*=%s*(%a+)") or ""):lower()
end

local function has_tag(msg, header, tag)
  for _, v in ipairs(msg:headers(header)) do
    for t in v:gmatch("[^,%s]+") do
      if t:lower() == tag then return true end
    end
  end
  return false
end

-- the UA's settings: sip.ua{ session_timer = { expires =, min_se = } }
local function settings(ua)
  return state.session_timer[ua] or {}
end

-- RFC 4028 asks for at least 90 s; a UA may set less (a test's short
-- sessions)
local function min_se(ua)
  return settings(ua).min_se or MIN_SE
end

-- does the peer take UPDATE in this dialog (its Allow)
local function peer_allows_update(call)
  local m = call.uas and call.invite or call.response
  if not m then return false end
  for _, v in ipairs(m:headers("Allow")) do
    if v:upper():find("UPDATE", 1, true) then return true end
  end
  return false
end

local function calls() return require "sip.call" end   -- sip.call requires this module

local start     -- below

-- our refresh: UPDATE without SDP when the peer takes it, else a re-INVITE
-- with the SDP it has; a 422 asks for more (6, 7.4)
local function refresh(call)
  local se = call._se
  for _ = 1, 2 do
    local h = { ["Session-Expires"] = se.expires .. ";refresher=" .. se.refresher,
                ["Min-SE"] = tostring(se.min_se), Supported = "timer" }
    local res, err, r
    if peer_allows_update(call) then
      res, err, r = call:update{ headers = h }
    else
      res, err, r = call:reinvite{ headers = h }
    end
    if call.state ~= "confirmed" then return end
    if res then
      local n, who = parse_se(res:header("Session-Expires"))
      if n then
        se.expires = n
        if who == "uac" or who == "uas" then se.refresher = who end
      end
      se.refreshes = (se.refreshes or 0) + 1
      return start(call)
    end
    local min = r and r.status == 422 and tonumber(r:header("Min-SE") or "")
    if not min or min <= se.expires then
      log("info", "call " .. tostring(call.call_id) .. ": session refresh failed (" .. tostring(err) ..
          "): hanging up")
      return calls().hangup(call, "session-expired")
    end
    se.expires, se.min_se = min, math.max(se.min_se, min)
  end
end

-- the timer: we refresh at half the interval; the peer must have by the
-- interval less min(32, interval/3), else BYE (10)
local function run(call, se, gen)
  local ours = (se.refresher == "uas") == (call.uas == true)
  local delay = ours and se.expires / 2 or se.expires - math.min(32, se.expires / 3)
  local co = current("session timer")
  local _ <close> = core.timer(delay, co)
  local ok = wait()
  -- ended with the call (its waits end "hangup"), or a newer timer runs
  if not ok or call.state ~= "confirmed" or call._se ~= se or se.gen ~= gen then return end
  if ours then return refresh(call) end
  log("info", "call " .. tostring(call.call_id) .. ": session not refreshed in " .. se.expires ..
      " s: hanging up")
  calls().hangup(call, "session-expired")
end

-- (re)start the call's timer: the one running stops at its next wake
function start(call)
  local se = call._se
  if not se then return end
  se.gen = (se.gen or 0) + 1
  sched.spawn_owned(nil, call, run, call, se, se.gen)
end
M.start = start

-- An incoming INVITE (calls' admission): 422 with Min-SE when its
-- Session-Expires is too short (5), else what the 2xx will say.
function M.admit(ua, call)
  local inv = call.invite
  local n, who = parse_se(inv:header("Session-Expires"))
  if not n then return nil end
  local min = min_se(ua)
  if n < min then return 422, "Min-SE: " .. min .. "\r\n" end
  if who ~= "uac" and who ~= "uas" then
    -- ours to choose: the caller refreshes when it says it can (9)
    who = has_tag(inv, "Supported", "timer") and "uac" or "uas"
  end
  call._se = { expires = n, refresher = who, min_se = min }
  return nil
end

-- The headers of our 2xx to the INVITE (req nil) or to a re-INVITE or
-- UPDATE (req) that asked for a session timer or refreshed one:
-- Session-Expires, and Require: timer when the caller refreshes (9).
-- A refresh restarts the timer.
function M.answer_headers(call, req)
  local se = call._se
  if req then
    local n, who = parse_se(req:header("Session-Expires"))
    if not n then return nil end
    se = se or { min_se = call.ua and min_se(call.ua) or MIN_SE }
    se.expires = math.max(n, se.min_se)
    if who == "uac" or who == "uas" then
      se.refresher = who
    elseif not se.refresher then
      se.refresher = has_tag(req, "Supported", "timer") and "uac" or "uas"
    end
    call._se = se
    if call.state == "confirmed" then start(call) end
  end
  if not se then return nil end
  local h = { ["Session-Expires"] = se.expires .. ";refresher=" .. se.refresher }
  if se.refresher == "uac" then h.Require = "timer" end
  return h
end

-- Our INVITE's headers when the UA (or the call) asks for a session
-- timer: headers, the interval, Min-SE; nil when it does not.
function M.invite_headers(ua, opts)
  local n = opts.session_expires
  if n == nil then n = settings(ua).expires end
  if not n or n == 0 then return nil end
  local min = min_se(ua)
  n = math.max(n, min)
  return { ["Session-Expires"] = tostring(n), ["Min-SE"] = tostring(min), Supported = "timer" }, n, min
end

-- A 422 to our INVITE: the interval to ask next, or nil
function M.retry_interval(res, asked)
  local min = res.status == 422 and tonumber(res:header("Min-SE") or "")
  if min and min > (asked or 0) then return min end
  return nil
end

-- The 2xx to our INVITE: the interval and refresher it settled (7.2);
-- none in it, and we asked: we refresh, alone.
function M.answered(call, res, asked, min)
  local n, who = parse_se(res:header("Session-Expires"))
  if not n and not asked then return end
  call._se = { expires = n or asked, refresher = who == "uas" and "uas" or "uac", min_se = min or MIN_SE }
  start(call)
end

return M
