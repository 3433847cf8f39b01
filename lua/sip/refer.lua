--- Call transfer: REFER (RFC 3515) in a call's dialog, its implicit
-- subscription's sipfrag NOTIFYs (RFC 5057: the same dialog), Referred-By,
-- norefersub (RFC 4488), and Replaces (RFC 3891) for attended transfers.
-- `call:refer(target)` transfers; `call:on("refer", fn)` lets a call be
-- transferred (the core answers 202, places the new call, reports its
-- progress and ends the old call); an INVITE with Replaces finds the call
-- it replaces. Loaded by sip (init.lua); not required directly.
-- @module sip

local core = require "sip.core"
local sched = require "sip.sched"
local class = require "sip.class"
local check = require "sip.check"
local calls = require "sip.call"

local current, log = sched.current, sched.log
local Call = class.methods(core.Call)
local CallMT = core.Call

local REFER_WAIT = 120          -- how long a transfer may take: ringing included
local REFER_EXPIRES = 60        -- the implicit subscription, as NOTIFYs say

-- "SIP/2.0 180 Ringing\r\n..." -> 180, "180 Ringing"; nil when no status line
local function sipfrag(body)
  local code, reason = (body or ""):match("^SIP/2%.0 ([1-6]%d%d) ?([^\r\n]*)")
  if not code then return nil end
  return tonumber(code), code .. (reason ~= "" and " " .. reason or "")
end

-- %XX and + of a URI header value (RFC 3261 19.1.1)
local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function escape(s)
  return (s:gsub("[^%w%-%.%_%~!%*'%(%)%[%]/:%+%$]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

-- Refer-To -> the target URI and the Replaces value, or nil, why
local function parse_refer_to(v)
  local list = v and core.name_addrs(v)
  if not list or #list ~= 1 then return nil, "Bad Refer-To" end
  local uri = list[1].uri
  if not uri:lower():match("^sips?:") then return nil, "Refer-To is not a SIP URI" end
  local base, query = uri:match("^([^?]*)%?(.*)$")
  if not base then return uri end
  local replaces
  for pair in query:gmatch("[^&]+") do
    local name, value = pair:match("^([^=]+)=(.*)$")
    if not name or name:lower() ~= "replaces" then
      return nil, "Refer-To headers other than Replaces"
    end
    replaces = unescape(value)
  end
  return base, nil, replaces
end

-- Replaces: "call-id;to-tag=x;from-tag=y[;early-only]"
local function parse_replaces(v)
  local cid, params = v:match("^%s*([^;%s]+)%s*(.*)$")
  if not cid then return nil end
  local r = { call_id = cid }
  for k, val in params:gmatch(";%s*([%w%-]+)%s*=?%s*([^;]*)") do
    k = k:lower()
    if k == "to-tag" then r.to_tag = val:match("^(.-)%s*$")
    elseif k == "from-tag" then r.from_tag = val:match("^(.-)%s*$")
    elseif k == "early-only" then r.early_only = true end
  end
  if not r.to_tag or not r.from_tag then return nil end
  return r
end

-- Transferor -------------------------------------------------------------

-- a NOTIFY of the transfer we asked for: Event refer, sipfrag bodies
local function transfer_notify(call, req)
  local out = call._refer_out
  local ev = req:header("Event") or ""
  if not out or not ev:lower():match("^%s*refer") then return false end
  local id = ev:match(";%s*[iI][dD]%s*=%s*(%d+)")
  if id and out.id and tonumber(id) ~= out.id then
    req:reply(481)
    return true
  end
  local ss = req:header("Subscription-State")
  local status, text = sipfrag(req.body)
  if not ss or (not status and req.body ~= "") then
    req:reply(400, not ss and "Missing Subscription-State header" or "Bad sipfrag body")
    return true
  end
  req:reply(200)
  if status then
    out.last, out.text = status, text
  end
  local terminated = ss:lower():match("^%s*terminated")
  if (status and status >= 200) or terminated then
    out.final = out.final or status or 0
    out.text = out.text or ("terminated: " .. (ss:match("reason=([%w%-]+)") or "noresource"))
    calls.notify(call, { refer = true }, "final")
  end
  return true
end

local REFER_OPTS = { timeout = "number", headers = "table", referred_by = "string", norefersub = "boolean" }

--- @type Call

--- Transfer the peer: a REFER in this call's dialog, then the NOTIFYs
-- that report the new call's progress (message/sipfrag), until its
-- final status. `target` is a SIP URI (a blind transfer) or another
-- confirmed `Call` (an attended transfer: Refer-To carries Replaces, so
-- that the peer's new call replaces that one). Hang up this call after
-- a success if the peer does not (RFC 5589 says it ends the old call).
-- Options: `referred_by` (default our URI in this dialog), `headers`,
-- `norefersub` (ask for no NOTIFYs, RFC 4488: true, 202 as soon as the
-- peer accepts, when it agrees), `timeout` (seconds for the whole
-- transfer, default 120).
-- @param target a SIP URI string, or a `Call`
-- @tab[opt] opts the options above
-- @treturn boolean true when the new call was answered (a 2xx sipfrag)
-- @treturn int the final status the peer reported (or 202 with norefersub)
-- @return[2] nil
-- @treturn[2] string `"603 Decline"` (the REFER refused), `"486 Busy
-- Here"` (the new call failed, from the sipfrag), `"timeout"`, `"hangup"`
-- (this call ended first), `"call is STATE"`
-- @treturn[2] ?Message the REFER's response, when it failed
function Call:refer(target, opts)
  check.self(self, CallMT, "sip.Call", "call:refer")
  opts = check.opts(opts, "call:refer", 2, REFER_OPTS)
  check.lines(opts, "call:refer", 2, { "referred_by" })
  local refer_to
  if getmetatable(target) == CallMT then
    if target == self then error("bad argument #1 to 'call:refer' (a call cannot replace itself)", 2) end
    if target.state ~= "confirmed" or not target.remote_target then
      return nil, "the other call is " .. tostring(target.state)
    end
    -- Replaces as the transfer target will read it: its tag is to-tag
    local replaces = target.call_id .. ";to-tag=" .. target.remote_tag .. ";from-tag=" .. target.local_tag
    refer_to = "<" .. target.remote_target .. "?Replaces=" .. escape(replaces) .. ">"
  elseif type(target) == "string" then
    if not target:lower():match("^sips?:[^%s<>]+$") then
      error("bad argument #1 to 'call:refer' (SIP URI or sip.Call expected)", 2)
    end
    refer_to = "<" .. target .. ">"
  else
    error("bad argument #1 to 'call:refer' (SIP URI or sip.Call expected, got " .. type(target) .. ")", 2)
  end
  current("call:refer")
  if self.state ~= "confirmed" then return nil, "call is " .. tostring(self.state) end
  if self._refer_out then return nil, "a transfer is in progress" end
  -- Referred-By: our URI in this dialog, without its tag
  local own = core.name_addrs(self["local"] or "")
  local h = { ["Refer-To"] = refer_to,
              ["Referred-By"] = opts.referred_by or (own and own[1] and "<" .. own[1].uri .. ">") }
  if opts.norefersub then
    h["Refer-Sub"] = "false"
    h.Supported = "norefersub"
  end
  for k, v in pairs(opts.headers or {}) do h[k] = h[k] or v end
  local out = {}
  self._refer_out = out
  local res, err = self:request("REFER", { headers = h, timeout = opts.timeout })
  if not res or res.status >= 300 then
    self._refer_out = nil
    if not res then return nil, err end
    return nil, res.status .. " " .. res.reason, res
  end
  if opts.norefersub and (res:header("Refer-Sub") or ""):lower():match("^%s*false") then
    self._refer_out = nil
    return true, res.status
  end
  out.id = res.cseq
  if not out.final then
    local deadline = core.now() + (opts.timeout or REFER_WAIT)
    while not out.final do
      local left = deadline - core.now()
      if left <= 0 then break end
      local why, e = calls.wait_for(self, "refer", left)
      if why ~= "final" then
        self._refer_out = nil
        return nil, (why == nil and e == "timeout") and "timeout" or "hangup"
      end
    end
  end
  self._refer_out = nil
  if not out.final then return nil, "timeout" end
  if out.final >= 200 and out.final < 300 then return true, out.final end
  return nil, out.text
end

-- Transferee ---------------------------------------------------------------

-- a NOTIFY of our transfer's progress to the transferor (RFC 3515 2.4.4)
local function report(call, id, text, final)
  if call.state ~= "confirmed" then return end
  local ss = final and "terminated;reason=noresource" or ("active;expires=" .. REFER_EXPIRES)
  local res, err = call:request("NOTIFY", {
    headers = { Event = "refer;id=" .. id, ["Subscription-State"] = ss },
    body = "SIP/2.0 " .. text .. "\r\n", content_type = "message/sipfrag;version=2.0",
  })
  if not res or res.status >= 300 then
    log("info", "transfer of " .. tostring(call.call_id) .. ": NOTIFY " ..
        (res and res.status or tostring(err)))
  end
end

-- place the new call, report it, end the old one
local function transfer(call, req, refer, quiet)
  local id = req.cseq
  if not quiet then report(call, id, "100 Trying") end
  local h = { ["Referred-By"] = refer.referred_by, Replaces = refer.replaces_text }
  local new, err, res = call.ua:invite(refer.target, {
    headers = h,
    on_provisional = not quiet and function(r)
      if r.status > 100 then report(call, id, r.status .. " " .. r.reason) end
    end or nil,
  })
  refer.call = new
  if not quiet then
    local text = new and "200 OK" or res and (res.status .. " " .. res.reason) or
                 (err == "timeout" and "408 Request Timeout" or "503 Service Unavailable")
    report(call, id, text, true)
  end
  if new then
    call.transferred_to = new
    calls.hangup(call, "transferred")
  else
    log("info", "transfer of " .. tostring(call.call_id) .. " to " .. refer.target .. " failed: " ..
        tostring(err))
  end
  call._refer_in = nil
  return new
end

-- a REFER in a call's dialog
local function incoming_refer(call, req)
  local target, why, replaces_text = parse_refer_to(req:header("Refer-To"))
  if not target then
    req:reply(400, why)
    return true
  end
  if replaces_text and not parse_replaces(replaces_text) then
    req:reply(400, "Bad Replaces in Refer-To")
    return true
  end
  if call._refer_in then
    req:reply(491)         -- one transfer at a time
    return true
  end
  local hook = call._hooks and call._hooks.refer
  if not hook then
    req:reply(603)         -- transfers are the script's to allow
    return true
  end
  local refer = { target = target, replaces_text = replaces_text,
                  referred_by = req:header("Referred-By"), request = req }
  call._refer_in = refer
  sched.spawn_owned(function(ok, a)
    if not ok then
      log("error", "call hook for REFER failed: " .. tostring(a))
      req:reply(500)
      call._refer_in = nil
    elseif a ~= true then
      req:reply(type(a) == "number" and a >= 300 and a or 603)
      call._refer_in = nil
    end
  end, call, function()
    local allowed = hook(call, refer)
    if allowed ~= true then return allowed end
    -- RFC 4488: no implicit subscription when asked for none
    local quiet = (req:header("Refer-Sub") or ""):lower():match("^%s*false") ~= nil
    req:reply(202, nil, quiet and { headers = { ["Refer-Sub"] = "false" } } or nil)
    transfer(call, req, refer, quiet)
    return true
  end)
  return true
end

calls.usages.REFER = incoming_refer
calls.usages.NOTIFY = transfer_notify

-- An INVITE with Replaces (RFC 3891 3): the confirmed call it names
-- becomes call.replaces (ended once the new call is up); none: 481
calls.admits[#calls.admits + 1] = function(ua, call)
  local v = call.invite and call.invite:header("Replaces")
  if not v then return nil end
  local r = parse_replaces(v)
  if not r then return 400 end
  -- its to-tag is ours, its from-tag the peer's
  local old = ua:_find_call(r.call_id, r.to_tag, r.from_tag)
  if not old or (r.early_only and old.state == "confirmed") then return 481 end
  call.replaces = old
  return nil
end

return {}
