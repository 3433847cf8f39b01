--- Calls: INVITE sessions as UAS (ua:on("INVITE", fn)) and UAC (ua:invite).
-- The C half (sip.Call in csrc/l_call.c) does dialogs and transactions;
-- here are the blocking methods and the reactions to the core's events.
-- Loaded by sip (init.lua); not required directly.
-- @module sip

--- A call (`sip.Call`): an INVITE dialog. The callee gets one in its
-- INVITE handler (`ua:on("INVITE", fn)`), the caller one from
-- `ua:invite` once it is answered. Offers and answers are SDP text
-- (`sip.sdp`); docs/calls.md has the tables and what the core does for
-- you (100 Trying, 2xx retransmissions, ACKs, CANCEL races, re-INVITE
-- answers).
--
-- `state`: `"calling"` (UAC: the INVITE is out; seen only by `on_call`),
-- `"incoming"` (UAS: nothing sent but 100 Trying), `"early"` (UAS: 180 or
-- 183 sent), `"answered"` (UAS: 200 sent, no ACK yet), `"confirmed"`,
-- `"terminating"` (our BYE is out), `"ended"`.
--
-- `ended_why`: `"bye"` (the peer sent BYE), `"hangup"` (`call:hangup()`),
-- `"cancel"` (the caller sent CANCEL before the answer), `"rejected"`
-- (`call:reject`, a status or nothing returned by the handler, a
-- challenge from `call:authenticate`, no codec in common), `"timeout"`
-- (no ACK for our 200 within 64·T1: the core sent BYE), `"failed"` (the
-- handler raised before answering: 500 sent), `"closed"` (the UA was
-- closed). An outgoing call that was never answered ends with
-- `ua:invite`'s error: `"486 Busy Here"`, `"timeout"`, `"cancelled"` ...
--
-- `local call <close> = ua:invite(...)` hangs up at the end of the
-- scope (BYE, CANCEL or 480, as `call:hangup`); nothing on an ended call.
--
-- Fields (read them; a script may keep fields of its own under other names):
--
-- - `invite`: the INVITE, a `Message` (received by a UAS, sent by a UAC)
-- - `response`: UAC: the 2xx that answered it
-- - `uas`: true for a call we answer, false for one we placed
-- - `state`: see above
-- - `ended_why`: see above, once `state` is `"ended"`
-- - `from`: the INVITE's From header value
-- - `to`: the INVITE's To header value
-- - `call_id`: the Call-ID
-- - `local_tag`: our tag (nil before the dialog exists and after it ends)
-- - `remote_tag`: the peer's tag (same lifetime)
-- - `local`: our From/To value with its tag (same lifetime)
-- - `remote`: the peer's From/To value with its tag (same lifetime)
-- - `remote_target`: the peer's Contact URI, where requests in the
--   dialog go (same lifetime)
-- - `routes`: the route set as the `Route:` header lines the dialog
--   sends, `""` when none (same lifetime)
-- - `local_sdp`: the SDP text we last sent in an offer or answer
-- - `remote_sdp`: the peer's last SDP, parsed (a `sip.sdp.parse`
--   table) on first use; a UAS has it once it answered (before that the
--   offer is `call.invite.body`)
-- - `remote_sdp_text`: the same SDP as text
-- @type Call

local core = require "sip.core"
local sdp = require "sip.sdp"

local sched = require "sip.sched"
local state = require "sip.state"
local class = require "sip.class"
local check = require "sip.check"
local auth = require "sip.auth"
local media = require "sip.media"
local timers = require "sip.session"    -- session timers (RFC 4028)

-- what sip (init.lua) calls: a new incoming call, an event of a call
local M = {}

local current, wait, wake_now, spawn_with, spawn_task, log =
  sched.current, sched.wait, sched.wake_now, sched.spawn_with, sched.spawn_task, sched.log
-- the methods of sip.Call and sip.UA defined here go through class.interpose
local Call = class.methods(core.Call)
local UA = class.methods(core.UA)
local headers_text = core.headers_text

local CallMT = core.Call

-- self must be a sip.Call; opts must match spec (sip.check): errors
-- name the public method and point at the script's line
local function check_opts(self, opts, fname, n, spec)
  check.self(self, CallMT, "sip.Call", fname, 3)
  return check.opts(opts, fname, n, spec, 3)
end
-- set just before the library's own call:request("BYE") (hangup): a
-- script's BYE would leave the call "confirmed", so it raises
local internal_bye = false
-- the kinds of waiters an event wakes (constant: no table per event)
-- a call's end wakes call:wait and a transfer waiting for its NOTIFYs
-- (a wait for the PRACK of a reliable 1xx ends with the answer's)
local ANSWER, END = { answer = true, prack = true }, { ["end"] = true, refer = true }
local PRACK = { prack = true }

-- The peer's SDP is kept as text where it already is (the INVITE, the
-- 2xx) and parsed only when a script reads remote_sdp: a call that
-- never looks at it costs no tables. set_remote_sdp records a newer one
-- (re-INVITE, the ACK of a late offer).
local function sdp_body(msg)
  local body = msg and msg.body
  if body and body ~= "" then
    local ct = msg.content_type
    -- the usual spelling first: no lower-cased copy
    if ct == "application/sdp" or (ct and ct:lower():find("application/sdp", 1, true)) then
      return body
    end
  end
end

core.Call.lazy.remote_sdp_text = function(call)
  local text = call._remote_sdp_text
  if text then return text end
  if call.uas then return sdp_body(call.invite) end
  return sdp_body(call.response)
end

core.Call.lazy.remote_sdp = function(call)
  local text = call.remote_sdp_text
  if not text then return nil end
  local parsed = sdp.parse(text)
  call.remote_sdp = parsed
  return parsed
end

local function set_remote_sdp(call, text)
  call.remote_sdp = nil
  call._remote_sdp_text = text
end

-- a coroutine waits for one of the call's events, with an optional timeout
local WAIT_NAME = { answer = "call:answer", ["end"] = "call:end", prack = "call:answer" }  -- no string per wait

local function wait_for(call, kind, timeout)
  local co = current(WAIT_NAME[kind])
  local w = call._waiters
  if not w then
    w = {}
    call._waiters = w
  end
  w[co] = kind
  local _ <close> = timeout and core.timer(timeout, co) or nil
  local a, b = wait()
  w[co] = nil
  if a == true then return nil, "timeout" end   -- the timer's wake
  return a, b
end

-- wake the waiters of these kinds with (value, err)
local function notify(call, kinds, a, b)
  local w = call._waiters
  if not w then return end
  -- the matching waiters first, then the wakes: a woken coroutine runs
  -- at once and may start a new wait on this call (a new key in w),
  -- which must not happen in the middle of the walk
  local woken
  for co, kind in pairs(w) do
    if kinds[kind] then
      woken = woken or {}
      woken[#woken + 1] = co
    end
  end
  if not woken then return end
  for _, co in ipairs(woken) do w[co] = nil end
  for _, co in ipairs(woken) do wake_now(co, a, b) end
end

-- the host a UA's SDP answers name, once per UA (its listen address
-- does not change)
local ua_hosts = setmetatable({}, { __mode = "k" })

local function ua_host(ua)
  local host = ua and ua_hosts[ua]
  if host then return host end
  local hostport = ua and ua:address() or ""
  host = hostport:match("^%a+:%[?([^%]]*)%]?:%d+$") or "127.0.0.1"
  if host == "0.0.0.0" or host == "::" then host = "127.0.0.1" end
  if ua then ua_hosts[ua] = host end
  return host
end

local function local_addr(call)
  return ua_host(call.ua)
end

-- An ended call keeps C memory the collector does not see (its
-- INVITE, about a kilobyte) until the collector frees it, and once it
-- has lived long enough to be old, generational mode frees it only in a
-- major collection, which comes when the heap has doubled: with many
-- long calls, dead ones pile up to more than the live ones and twice
-- the memory. So once as many calls ended as half of those alive (and
-- at least BULK), a full collection: its cost, proportional to the live
-- heap, is spread over as many ended calls, so stays the same per call.
local BULK = 10000
local live_calls, ended_since = 0, 0

local function call_started()
  live_calls = live_calls + 1
end

local function call_ended()
  if live_calls > 0 then live_calls = live_calls - 1 end
  ended_since = ended_since + 1
  if ended_since >= BULK and ended_since * 2 >= live_calls and collectgarbage("isrunning") then
    ended_since = 0
    collectgarbage("collect")
  end
end

-- keep_c: the C side ends by itself (an outgoing call that failed
-- before an answer keeps its INVITE transaction to ACK/BYE late 2xx)
local function finish(call, why, keep_c)
  if call.state == "ended" then return end
  call.state = "ended"
  call_ended()
  call.ended_why = why
  -- the waits pending in the call's coroutines, before anyone wakes
  local pending = sched.owned_waits(call)
  notify(call, ANSWER, nil, why == "cancel" and "cancelled" or why)
  notify(call, END, why)
  local dw = call._digit_waiter
  if dw then
    call._digit_waiter = nil
    wake_now(dw, nil, "hangup")
  end
  -- plays, records and tones pending on the call end with "hangup"
  local m = call.media
  if m then m:close("hangup") end
  if not keep_c then call:_end() end
  -- whatever else they wait on (a sleep, a request, an INVITE of their
  -- own) ends now too; their later waits work as usual
  sched.cancel_owned(pending, "hangup")
  local h = call._hooks and call._hooks.ended
  if h then spawn_with(nil, h, call, why) end
end

local function remote_offer(call)
  return sdp_body(call.invite)
end

-- -------------------------------------------------------------------------
-- Media: with sip.ua{ media = {...} }, a call answered or placed without
-- an SDP of the script's gets an RTP session (call.media) and a real
-- offer/answer on its port (lua/sip/media.lua, csrc/media/)

local ua_media = state.media

-- a new RTP session for a call of `ua`: nil when the UA has no media
-- settings, fail and a message when none can be opened
local function new_session(ua, host)
  local cfg = ua_media[ua]
  if not cfg then return nil end
  return media.session{ addr = cfg.addr or host, ports = cfg.ports }
end

-- our SDP on the session: the answer to `offer`, or an offer; the
-- session follows the peer's SDP once both are known
local function session_sdp(call, s, offer)
  local cfg = ua_media[call.ua]
  local text, ours = media.sdp(s, offer, { addr = cfg.addr, codecs = cfg.codecs })
  if not text then return nil, ours end
  call._media_ours = ours
  if offer then media.apply(s, offer, ours) end
  return text
end

local attach_media     -- below, with the digits

-- the call's SDP when its UA does media: nil when it does not (the
-- script or the default answer decides), fail when it cannot
local function media_body(call)
  if not ua_media[call.ua] then return nil end
  local s = call.media
  if not s then
    local err
    s, err = new_session(call.ua, local_addr(call))
    if not s then return false, err end
    attach_media(call, s)
  end
  return session_sdp(call, s, remote_offer(call))
end

-- refuse an INVITE whose offer we cannot take (13.3.1.3): 488 with a
-- Warning, or 500 when no media port could be opened
local function refuse(call, why)
  local host = local_addr(call)
  if why == "no common codec" or tostring(why):find("^sdp") then
    call:_reply(488, nil, headers_text({ Warning = '305 ' .. host .. ' "' ..
                (why == "no common codec" and "Incompatible media format" or "Bad SDP") .. '"' }))
  else
    call:_reply(500, "Media Unavailable")
  end
  finish(call, "rejected")
  return nil, why
end

-- the call's session for a verb, or nil once the call is over; a call
-- that never had media is the script's mistake
local function verb_session(call, fname)
  check.self(call, CallMT, "sip.Call", fname, 3)
  if call.state == "ended" then return nil end
  local m = call.media
  if not m then
    error(fname .. ": the call has no media (give its UA media settings: " ..
          "sip.ua{ media = { ... } })", 3)
  end
  return m
end

-- -------------------------------------------------------------------------
-- DTMF: one digit stream per call from every source (RFC 4733 and inband
-- from the media engine, SIP INFO here), a digit once even when a peer
-- sends it two ways

local MAX_DIGITS = 64          -- buffered, not yet collected: a flood is capped
local DUP_WINDOW = 0.5         -- the same digit by another method within it is one

local function deliver(call, digit, source)
  if call.state == "ended" then return end
  local now = core.now()
  local last = call._last_digit
  if last and last[1] == digit and last[2] ~= source and now - last[3] < DUP_WINDOW then
    return
  end
  if last then
    last[1], last[2], last[3] = digit, source, now
  else
    call._last_digit = { digit, source, now }
  end
  local buf = call._digits
  if not buf then
    buf = { head = 1, tail = 0 }
    call._digits = buf
  end
  if buf.tail - buf.head + 1 >= MAX_DIGITS then
    -- one line per flood, not one per digit
    if not buf.full then
      buf.full = true
      log("warn", "call " .. tostring(call.call_id) .. ": " .. MAX_DIGITS ..
          " digits wait to be collected: more are dropped")
    end
  else
    buf.full = nil
    buf.tail = buf.tail + 1
    buf[buf.tail] = digit
  end
  -- a prompt played with barge stops (the media engine does it for
  -- the digits it detects itself)
  if source == "info" and call.media then call.media:barge(digit) end
  local w = call._digit_waiter
  if w then
    call._digit_waiter = nil
    wake_now(w, "digit")
  end
  local h = call._hooks and call._hooks.dtmf
  if h then
    sched.spawn_owned(function(ok, tb)
      if not ok then log("error", "dtmf hook failed: " .. tb) end
    end, call, h, call, digit, source)
  end
end

-- the digits the media engine detects reach the call
function attach_media(call, s)
  call.media = s
  s:on_digit(function(digit, source) return deliver(call, digit, source) end)
end

local RELAY_SIGNALS = { ["10"] = "*", ["11"] = "#", ["12"] = "A", ["13"] = "B", ["14"] = "C",
                        ["15"] = "D" }

-- the digit of an INFO (application/dtmf-relay "Signal=5", or
-- application/dtmf "5"); false for a DTMF body we cannot read, nil for
-- an INFO that is not DTMF
local function info_digit(req)
  local ct = req.content_type
  ct = ct and ct:lower()
  if not ct then return nil end
  local v
  if ct:find("^%s*application/dtmf%-relay") then
    v = req.body:match("[Ss][Ii][Gg][Nn][Aa][Ll]%s*=%s*([%w*#]+)")
  elseif ct:find("^%s*application/dtmf%f[^%w%-]") then
    v = req.body:match("^%s*([%w*#]+)%s*$")
  else
    return nil
  end
  v = v and (RELAY_SIGNALS[v] or v:upper())
  if v and v:find("^[%dA-D*#]$") then return v end
  return false
end

-- the next digit, waiting up to `secs`: the digit, or nil and
-- "timeout" / "hangup" / "cancelled"
local function next_digit(call, secs)
  local buf = call._digits
  if not (buf and buf.head <= buf.tail) then
    if call.state == "ended" then return nil, "hangup" end
    local co = current("call:collect")
    call._digit_waiter = co
    local _ <close> = core.timer(secs, co)
    local r, why = wait()
    if call._digit_waiter == co then call._digit_waiter = nil end
    if r == true then return nil, "timeout" end
    if r ~= "digit" then return nil, why end
    buf = call._digits
  end
  local d = buf[buf.head]
  buf[buf.head] = nil
  buf.head = buf.head + 1
  return d
end

--- Forget the digits typed so far and not collected.
function Call:flush_dtmf()
  check.self(self, CallMT, "sip.Call", "call:flush_dtmf")
  self._digits = nil
end

local COLLECT_OPTS = { min = "integer", max = "integer", terminators = "string",
                       timeout = "number", interdigit = "number", prompt = "string|table",
                       invalid = "string|table", retries = "integer", pattern = "string" }

-- one try: the digits and how the try ended ("max", "term", "timeout",
-- or a reason the wait ended: "hangup", "cancelled")
local function gather(call, max, terms, timeout, interdigit)
  local digits = {}
  while #digits < max do
    local d, why = next_digit(call, #digits == 0 and timeout or interdigit)
    if not d then return table.concat(digits), why end
    if terms:find(d, 1, true) then return table.concat(digits), "term" end
    digits[#digits + 1] = d
  end
  return table.concat(digits), "max"
end

--- Collect digits: play `prompt` (a digit stops it, and counts), then
-- gather up to `max` digits until a terminator (not included), `timeout`
-- seconds before the first digit or `interdigit` between digits; check
-- `min` and the Lua `pattern`; digits that do not fit play `invalid`,
-- and a miss of either kind tries again (the prompt first), `retries`
-- tries in all.
-- @tab[opt] opts min (1), max (128), terminators ("#"; "" for none),
-- timeout (5), interdigit (3), prompt, invalid, retries (1), pattern
-- @treturn string the digits
-- @return[2] nil, "timeout" | "invalid" | "hangup" | "cancelled" | "file: ..."
function Call:collect(opts)
  opts = check_opts(self, opts, "call:collect", 1, COLLECT_OPTS)
  local min, max = opts.min or 1, opts.max or 128
  if min < 0 or max < 1 or min > max then
    check.arg(1, "call:collect", "options 'min' and 'max' need 0 <= min <= max, 1 <= max")
  end
  local terms = opts.terminators or "#"
  local timeout, interdigit = opts.timeout or 5, opts.interdigit or 3
  local tries = opts.retries or 1
  current("call:collect")
  local why = "timeout"
  for try = 1, tries do
    if self.state == "ended" then return nil, "hangup" end
    local buf = self._digits
    if opts.prompt and not (buf and buf.head <= buf.tail) then
      local ok, err = self:play(opts.prompt, { barge = true })
      if not ok and err ~= "digit" then return nil, err end
    end
    local digits, ended = gather(self, max, terms, timeout, interdigit)
    if ended ~= "max" and ended ~= "term" and ended ~= "timeout" then return nil, ended end
    if digits ~= "" or ended == "term" then
      if #digits >= min and (not opts.pattern or digits:find(opts.pattern)) then return digits end
      why = "invalid"
    else
      why = "timeout"
    end
    if try < tries and why == "invalid" and opts.invalid then
      local ok, err = self:play(opts.invalid)
      if not ok and err ~= "digit" then return nil, err end
    end
  end
  return nil, why
end

local SEND_DTMF_OPTS = { method = "string", duration = "integer", gap = "integer" }
local DTMF_METHODS = { rfc4733 = true, info = true, inband = true }

--- Send digits: RFC 4733 events when the call negotiated telephone-event,
-- else SIP INFO (application/dtmf-relay), or `method = "inband"` tones.
-- @string digits 0-9, *, #, A-D
-- @tab[opt] opts method ("rfc4733", "info", "inband"), duration (ms, 100),
-- gap (ms, 50)
-- @return true, or fail and a message
function Call:send_dtmf(digits, opts)
  opts = check_opts(self, opts, "call:send_dtmf", 2, SEND_DTMF_OPTS)
  if type(digits) ~= "string" or digits == "" or digits:find("[^%dA-D*#]") then
    check.arg(1, "call:send_dtmf", "digits 0-9, *, #, A-D expected")
  end
  if opts.method and not DTMF_METHODS[opts.method] then
    check.arg(2, "call:send_dtmf", "option 'method' must be \"rfc4733\", \"info\" or \"inband\"")
  end
  local co = current("call:send_dtmf")
  if self.state == "ended" then return nil, "hangup" end
  local m = self.media
  local method = opts.method or (m and m:dtmf_pt() and "rfc4733") or "info"
  local duration, gap = opts.duration or 100, opts.gap or 50
  if method == "info" then
    for d in digits:gmatch(".") do
      local res, err = self:request("INFO", { content_type = "application/dtmf-relay",
        body = "Signal=" .. d .. "\r\nDuration=" .. duration .. "\r\n" })
      if not res then return nil, err end
      if res.status >= 300 then return nil, res.status .. " " .. (res.reason or "") end
    end
    return true
  end
  if not m then
    error("call:send_dtmf: the call has no media for " .. method .. " (give its UA media settings)", 2)
  end
  local ok, err = m:_send_dtmf(digits, { mode = method, duration = duration, gap = gap }, co)
  if not ok then return nil, err end
  return wait(function(_, reason) m:stop(reason, "dtmf") end)
end

--- Play a WAV file, or a list of them, to the caller; waits until played.
-- @param files a file name or a list of them
-- @tab[opt] opts loop, barge
-- @return true, or fail and "hangup", "stopped", "file: ..."
function Call:play(files, opts)
  local m = verb_session(self, "call:play")
  if not m then return nil, "hangup" end
  return media.play(m, files, opts)
end

--- Record what the caller says to a WAV file.
-- @string path the file
-- @tab[opt] opts max, silence, threshold, beep, format
-- @return { duration =, reason = }, or fail and "hangup", "file: ..."
function Call:record(path, opts)
  local m = verb_session(self, "call:record")
  if not m then return nil, "hangup" end
  return media.record(m, path, opts)
end

--- Play a tone ("ring", "busy", "dial", "beep" or { freqs =, on =, off = }).
-- @param what the tone: a name or a table
-- @tab[opt] opts duration, level
-- @return true, or fail and the reason it stopped
function Call:tone(what, opts)
  local m = verb_session(self, "call:tone")
  if not m then return nil, "hangup" end
  return media.tone(m, what, opts)
end

local RING = { headers = "table", reliable = "boolean" }
local PROGRESS = { headers = "table", sdp = "string", reliable = "boolean" }
local ANSWER_OPTS = { headers = "table", sdp = "string", timeout = "number" }
local REQUEST_OPTS = { headers = "table", body = "string", content_type = "string",
                       timeout = "number", auth = "table|function", contact = "string" }
local REINVITE_OPTS = { headers = "table", sdp = "string", timeout = "number", contact = "string" }
local INVITE_OPTS = {
  sdp = "string", headers = "table", auth = "table|function", timeout = "number",
  proxy = "string", from = "string", to = "string", call_id = "string", cseq = "integer",
  on_provisional = "function", on_call = "function", answer = "function", contact = "string",
  reliable = "boolean|string", session_expires = "number",
}

local function extra_headers(opts)
  return opts.headers and headers_text(opts.headers, "opts.headers") or nil
end

-- -------------------------------------------------------------------------
-- UAS

-- RFC 3262: whether a 1xx goes reliably (every one does when the INVITE
-- requires 100rel), once the last reliable one was PRACKed (3: one at a
-- time); nil, err when the caller takes none, or the wait ended
local function reliable_1xx(call, want, fname)
  local peer = call:_peer_100rel()
  if peer == "require" then want = true end
  if not want then return false end
  if not peer then return nil, "the caller does not support 100rel" end
  while call._prack_due do
    current(fname)
    local ok, why = wait_for(call, "prack")
    if not ok then return nil, why end
    if call.state ~= "incoming" and call.state ~= "early" then return nil, "call is " .. call.state end
  end
  return true
end

--- 180 Ringing.
-- With `reliable = true` it goes reliably (RFC 3262, 100rel): with
-- `Require: 100rel` and an `RSeq`, sent again until the caller's PRACK
-- comes (which gets 200), in the early dialog it makes. One reliable 1xx
-- at a time: a second waits for the first one's PRACK. When the INVITE
-- does not name 100rel in `Supported` or `Require`, `reliable = true`
-- fails with `nil, "the caller does not support 100rel"` (nothing is
-- sent); when it requires it, every 180 and 183 goes reliably, whatever
-- `reliable` says. No PRACK within 64·T1: the core answers the INVITE
-- 500 and the call ends `"timeout"`.
-- @tab[opt] opts `headers`, `reliable`
-- @treturn boolean true
-- @return[2] nil
-- @treturn[2] string `"call is STATE"` once the call is past answering
-- (answered, or ended by a CANCEL), `"the caller does not support
-- 100rel"`, or why the send (or the wait for an earlier PRACK) failed
function Call:ring(opts)
  opts = check_opts(self, opts, "call:ring", 1, RING)
  if self.state ~= "incoming" and self.state ~= "early" then return nil, "call is " .. self.state end
  local rel, why = reliable_1xx(self, opts.reliable, "call:ring")
  if rel == nil then return nil, why end
  local ok, err = self:_reply(180, nil, extra_headers(opts), nil, nil, rel)
  if ok then
    self.state = "early"
    if rel then self._prack_due = true end
  end
  return ok, err
end

--- 183 Session Progress with early media.
-- With `reliable = true` it goes reliably, as `call:ring` says. Its SDP
-- (`sdp`, or the media session's) is the answer to the INVITE's offer,
-- or, when the INVITE had none, our offer: the PRACK then carries the
-- answer, which becomes `remote_sdp`. A reliable 183 with SDP holds
-- `call:answer` back until its PRACK (RFC 3262 3).
-- @tab[opt] opts `sdp` (the early media answer, or an offer), `headers`,
-- `reliable`
-- @treturn boolean true
-- @return[2] nil
-- @treturn[2] string as `call:ring`
function Call:progress(opts)
  opts = check_opts(self, opts, "call:progress", 1, PROGRESS)
  if self.state ~= "incoming" and self.state ~= "early" then return nil, "call is " .. self.state end
  local rel, rwhy = reliable_1xx(self, opts.reliable, "call:progress")
  if rel == nil then return nil, rwhy end
  local body = opts.sdp
  if not body then
    -- early media: the session opens now, so the script can play
    -- before it answers
    local why
    body, why = media_body(self)
    if body == false then return nil, why end
  end
  local ok, err = self:_reply(183, nil, extra_headers(opts), body, body and "application/sdp", rel)
  if ok then
    self.state = "early"
    if body then self.local_sdp = body end
    if rel then self._prack_due = body and "sdp" or true end
  end
  return ok, err
end

--- Answer with 200 and wait for the ACK.
-- Without `opts.sdp` (and no 183 SDP) the core answers the INVITE's
-- offer itself (`sip.sdp.default_answer`: inactive, port 9); when no
-- codec is in common it answers 488 with a `Warning: 305` instead, and
-- the call ends `"rejected"`. An INVITE without an offer gets an offer
-- in the 200. After a reliable 183 with SDP it first waits for that
-- 183's PRACK (RFC 3262 3).
-- @tab[opt] opts `sdp` (the answer, or an offer when the INVITE had
-- none), `headers`, `timeout` (seconds to wait for the ACK)
-- @treturn boolean true once the ACK arrived
-- @return[2] nil
-- @treturn[2] string `"timeout"` (no ACK in time; after 64·T1 the core
-- ends the call with a BYE), `"bye"`, `"cancelled"`, `"closed"`,
-- `"no common codec"`, `"call is STATE"`
function Call:answer(opts)
  opts = check_opts(self, opts, "call:answer", 1, ANSWER_OPTS)
  if self.state ~= "incoming" and self.state ~= "early" then return nil, "call is " .. self.state end
  current("call:answer")
  -- RFC 3262 3: no 2xx before the PRACK of a reliable 1xx with SDP
  while self._prack_due == "sdp" do
    local r, why = wait_for(self, "prack")
    if not r then return nil, why end
    if self.state ~= "incoming" and self.state ~= "early" then return nil, "call is " .. self.state end
  end
  -- the SDP of a 183 stays the answer unless the script gives another
  local body = opts.sdp or self.local_sdp
  local offer = remote_offer(self)
  if not body then
    local why
    body, why = media_body(self)
    if body == false or (body == nil and why) then return refuse(self, why) end
  end
  if not body and offer then
    -- a 200 never breaks offer/answer: a valid answer with no media yet
    local why
    body, why = sdp.default_answer(offer, local_addr(self))
    if not body then return refuse(self, why) end
  elseif not body and not offer then
    -- no offer in the INVITE: the 200 must carry one
    local host = local_addr(self)
    body = sdp.offer{ addr = host, port = 9, direction = "inactive" }
  end
  local hdrs = extra_headers(opts)
  local se = timers.answer_headers(self)
  if se then hdrs = (hdrs or "") .. headers_text(se) end
  local ok, err = self:_reply(200, nil, hdrs, body, body and "application/sdp")
  if not ok then return nil, err end
  self.local_sdp = body
  self.state = "answered"
  if self._acked then
    self.state = "confirmed"
    return true
  end
  local r, why = wait_for(self, "answer", opts.timeout)
  if r then return true end
  return nil, why
end

--- Digest-authenticate the INVITE: the user name, or nil after the
-- call was answered 401 (407 with proxy=true) and ended. Options as
-- req:authenticate.
-- The call then ends `"rejected"`; raises once the call was answered.
-- @tab opts as `msg:authenticate`
-- @treturn ?string the user name; nil once the challenge was sent
function Call:authenticate(opts)
  if self.state ~= "incoming" and self.state ~= "early" then
    error("call:authenticate: the call was answered already", 2)
  end
  return auth.authenticate(self.invite, opts, function(status, headers)
    self:_reply(status, nil, headers_text(headers))
    finish(self, "rejected")
  end)
end

--- Decline the call with a final status (default 486 Busy Here).
-- The call ends `"rejected"`.
-- @int[opt=486] status 300..699
-- @string[opt] reason the reason phrase (default: the standard one)
-- @treturn boolean true
-- @return[2] nil
-- @treturn[2] string as `call:ring`
function Call:reject(status, reason)
  check.self(self, CallMT, "sip.Call", "call:reject")
  status = status or 486
  if math.type(status) ~= "integer" or status < 300 or status > 699 then
    error("bad argument #1 to 'call:reject' (status 300..699 expected)", 2)
  end
  if reason ~= nil and (type(reason) ~= "string" or reason:find("[\r\n]")) then
    error("bad argument #2 to 'call:reject' (reason must be a string of one line)", 2)
  end
  if self.state ~= "incoming" and self.state ~= "early" then return nil, "call is " .. self.state end
  local ok, err = self:_reply(status, reason)
  finish(self, "rejected")
  return ok, err
end

-- -------------------------------------------------------------------------
-- Both sides

local hangup    -- below: hangup(call, why) is call:hangup with another ended_why

--- Hang up: BYE (waits for its response), CANCEL before an answer as
-- UAC, 480 before an answer as UAS.
-- CANCEL and 480 do not wait (`ua:invite` then returns
-- `nil, "cancelled"`). The call ends `"hangup"`; harmless on an ended call.
-- @treturn boolean true
-- @return[2] nil
-- @treturn[2] string why the BYE got no response (the call is ended all
-- the same)
function Call:hangup()
  check.self(self, CallMT, "sip.Call", "call:hangup")
  return hangup(self, "hangup")
end

-- why: what ended_why says ("hangup"; "transferred", "replaced")
function hangup(self, why)
  local st = self.state
  if st == "ended" then return true end
  if self.uas and (st == "incoming" or st == "early") then
    self:_reply(480)
    finish(self, why)
    return true
  end
  if not self.uas and st == "calling" then
    self:_cancel()
    return true
  end
  current("call:hangup")
  self.state = "terminating"
  -- the media stops with the BYE, not with its answer
  local m = self.media
  if m then m:close("hangup") end
  internal_bye = true
  local res, err = self:request("BYE")
  finish(self, why)
  if not res then return nil, err end
  return true
end

--- `local call <close> = ua:invite(...)`: the call is hung up when the
-- variable goes out of scope (BYE, CANCEL or 480 as call:hangup does);
-- nothing when it already ended. Idempotent. Outside a coroutine luasip
-- drives, the hangup runs in a coroutine of its own.
-- @local
function CallMT.__close(call)
  if getmetatable(call) ~= CallMT or call.state == "ended" or call.state == "terminating" then
    return
  end
  if sched.is_driven(coroutine.running()) then
    call:hangup()
  else
    spawn_with(nil, call.hangup, call)
  end
end

--- Wait until the call ends; returns why ("bye", "cancel", "timeout",
-- "hangup", "rejected", "failed", "closed") or fail, "timeout" after `timeout`.
-- Returns at once if it has ended. A pending wait keeps the script
-- running, so a UAC script can wait for the peer's BYE.
-- @number[opt] timeout seconds
-- @treturn string why it ended (`call.ended_why`)
-- @return[2] nil
-- @treturn[2] string `"timeout"`, the call still up
function Call:wait(timeout)
  check.self(self, CallMT, "sip.Call", "call:wait")
  check.type(timeout, "number|nil", 1, "call:wait")
  if self.state == "ended" then return self.ended_why end
  local why, err = wait_for(self, "end", timeout)
  if why then return why end
  return nil, err
end

--- A request within the dialog (INFO, MESSAGE, OPTIONS, UPDATE, NOTIFY ...).
-- Waits for its final response; a 401 or 407 is answered with the call's
-- credentials. ACK and CANCEL raise (the core sends them), and so does
-- BYE: end a call with `call:hangup()`.
-- @string method the method
-- @tab[opt] opts `headers` (a Contact there replaces ours), `body`,
-- `content_type`, `timeout`, `auth`, `contact`
-- @treturn Message the final response (any status)
-- @return[2] nil
-- @treturn[2] string `"timeout"`, `"no dialog"` (the call has ended),
-- `"transport: ..."`
function Call:request(method, opts)
  check.self(self, CallMT, "sip.Call", "call:request")
  if type(method) ~= "string" or not method:match("^[%w%-%.!%%%*_%+`'~]+$") then
    error("bad argument #1 to 'call:request' (method name expected)", 2)
  end
  method = method:upper()
  if method == "ACK" or method == "CANCEL" then
    error("bad argument #1 to 'call:request' (" .. method .. " is sent by the core)", 2)
  end
  if method == "BYE" and not internal_bye then
    error("bad argument #1 to 'call:request' (BYE ends the call: use call:hangup())", 2)
  end
  internal_bye = false
  opts = check.opts(opts, "call:request", 2, REQUEST_OPTS)
  local co = current("call:request")
  local creds = auth.check_creds(opts.auth, "call:request") or self._auth or
                (self.ua and state.auth[self.ua])
  local auth_state = creds and auth.new_state(creds)
  while true do
    local ok, err = self:_request(method, opts, co, extra_headers(opts))
    if not ok then return nil, err end
    local res, why = wait()
    if not res then return nil, why end
    local extra = (res.status == 401 or res.status == 407) and
                  auth.answer(auth_state, res, method, self.remote_target or "", opts.body)
    if not extra then return res end
    opts = auth.retry_opts(opts, extra, nil)
  end
end

--- Send a re-INVITE with a new offer; the answer becomes remote_sdp.
-- On a 2xx `local_sdp` becomes the offer; on a failure nothing changes.
-- @tab[opt] opts `sdp` (the new offer; default the current `local_sdp`),
-- `headers`, `timeout`, `contact` (our new Contact, which becomes the
-- dialog's)
-- @treturn Message the 2xx
-- @return[2] nil
-- @treturn[2] string `"488 Not Acceptable Here"` (status and reason),
-- `"491 Request Pending"` (a re-INVITE of ours is in progress),
-- `"call is STATE"`, `"timeout"` ...
-- @treturn[2] ?Message the response, when there was one
function Call:reinvite(opts)
  opts = check_opts(self, opts, "call:reinvite", 1, REINVITE_OPTS)
  check.lines(opts, "call:reinvite", 1, { "contact" })
  if self.state ~= "confirmed" and self.state ~= "answered" then return nil, "call is " .. self.state end
  local body = opts.sdp or self.local_sdp
  if opts.sdp then self._session = nil end  -- hold/unhold start from this SDP
  local res, err = self:request("INVITE", { body = body, content_type = "application/sdp",
                                            headers = opts.headers, timeout = opts.timeout,
                                            contact = opts.contact })
  if not res then return nil, err end
  if res.status >= 200 and res.status < 300 then
    self.local_sdp = body
    if res.body ~= "" then
      set_remote_sdp(self, res.body)
      if self.media then media.apply(self.media, res.body, body and sdp.parse(body)) end
    end
    return res
  end
  return nil, res.status .. " " .. (res.reason or ""), res
end

local function session_for(call)
  if call._session then return call._session end
  -- a session of our own mirroring what we sent, so o= keeps counting
  local p = call.local_sdp and sdp.parse(call.local_sdp)
  local host = local_addr(call)
  local s = { sess_id = p and p.origin and p.origin.sess_id or tostring(math.random(1, 2 ^ 31 - 1)),
              version = p and p.origin and tonumber(p.origin.sess_version) or 1,
              addr = p and (p.addr or p.origin.addr) or host, media = {} }
  for i, m in ipairs(p and p.media or {}) do
    s.media[i] = { media = m.media, port = m.port, proto = m.proto, codecs = m.codecs,
                   direction = m.direction }
  end
  if #s.media == 0 then
    s.media[1] = { media = "audio", port = 9, proto = "RTP/AVP",
                   codecs = { { pt = 0, name = "PCMU", rate = 8000 } }, direction = "sendrecv" }
  end
  call._session = s
  return s
end

--- Put the call on hold (re-INVITE with a=sendonly, or inactive when
-- the other side already holds us).
-- The offer is our last SDP with the direction changed and the `o=`
-- version bumped.
-- @treturn Message the 2xx
-- @return[2] nil
-- @treturn[2] string as `call:reinvite`
-- @treturn[2] ?Message the response, when there was one
function Call:hold()
  local s = session_for(self)
  local held_by_peer = self.remote_sdp and self.remote_sdp.media[1] and
                       (self.remote_sdp.media[1].direction == "sendonly" or
                        self.remote_sdp.media[1].direction == "inactive")
  local text = sdp.update(s, { direction = held_by_peer and "inactive" or "sendonly" })
  return self:reinvite{ sdp = text }
end

--- Take the call off hold (re-INVITE with a=sendrecv).
-- @treturn Message the 2xx
-- @return[2] nil
-- @treturn[2] string as `call:reinvite`
-- @treturn[2] ?Message the response, when there was one
function Call:unhold()
  local text = sdp.update(session_for(self), { direction = "sendrecv" })
  return self:reinvite{ sdp = text }
end

--- Hooks: "reinvite" fn(call, req) (answer req yourself, or return a
-- status; default accepts with our SDP mirrored to the offer), "ended"
-- fn(call, why), or a method name for requests in the dialog (INFO ...).
-- Hooks run in coroutines of their own and may block. A method hook
-- (`"info"`, `"message"`, `"update"`, `"options"`, `"notify"` ...) gets
-- `fn(call, req)`: returning nothing answers 200 (for an UPDATE with an
-- offer, 200 with the default answer), a status replies with it. A hook
-- that raises gets 500. BYE has no hook: use `"ended"`.
-- @string what `"reinvite"`, `"ended"` or a method name
-- @func fn the hook
-- @treturn Call the call
function Call:on(what, fn)
  check.self(self, CallMT, "sip.Call", "call:on")
  if type(what) ~= "string" then error("bad argument #1 to 'call:on' (string expected)", 2) end
  if type(fn) ~= "function" then error("bad argument #2 to 'call:on' (function expected)", 2) end
  local h = self._hooks
  if not h then
    h = {}
    self._hooks = h
  end
  h[what:lower()] = fn
  return self
end

-- the default answer to a re-INVITE or UPDATE: our session, direction
-- mirrored to the offer (a sendonly offer gets recvonly: hold works)
local function default_reoffer(call, req)
  local s = session_for(call)
  local offer = req.body ~= "" and sdp.parse(req.body)
  if offer then
    call._remote_sdp_text = req.body
    call.remote_sdp = offer
    local dir = offer.media[1] and offer.media[1].direction or "sendrecv"
    local text = sdp.update(s, { direction = sdp.mirror[dir] or "sendrecv" })
    -- the session follows: a new address or port, hold (stop sending), resume
    if call.media then media.apply(call.media, offer, s) end
    return text
  end
  -- an empty re-INVITE asks us for an offer
  return (sdp.update(s, {}))
end

-- the usages other than the call's own that serve requests in its
-- dialog (sip.refer: REFER, and the NOTIFYs of a transfer of ours):
-- method -> fn(call, req), true when it took the request
M.usages = {}

local function in_dialog_request(call, req)
  local method = req.method
  local usage = M.usages[method]
  if usage and usage(call, req) then return end
  if method == "INFO" then
    local digit = info_digit(req)
    if digit then
      deliver(call, digit, "info")
    elseif digit == false then
      log("warn", "call " .. tostring(call.call_id) .. ": INFO with an unreadable DTMF body")
      return req:reply(400, "Bad DTMF Body")
    end
  end
  local hooks = call._hooks or {}
  local hook = (method == "INVITE" and hooks.reinvite) or hooks[method:lower()]
  if hook then
    sched.spawn_owned(function(ok, a, b, c)
      if not ok then
        log("error", "call hook for " .. method .. " failed: " .. a)
        req:reply(500)
      elseif type(a) == "number" then
        req:reply(a, b, c)
      elseif a == nil and (method == "INVITE" or (method == "UPDATE" and req.body ~= "")) then
        -- the hook did not answer: the default does (a reply of the
        -- hook's own makes this one fail, and nothing changes)
        local body = default_reoffer(call, req)
        if req:reply(200, nil, { body = body, content_type = "application/sdp",
                                 headers = timers.answer_headers(call, req) }) then
          call.local_sdp = body
        end
      elseif a == nil then
        req:reply(200, nil, method == "UPDATE" and { headers = timers.answer_headers(call, req) } or nil)
      end
    end, call, hook, call, req)
    return
  end
  if method == "INVITE" or (method == "UPDATE" and req.body ~= "") then
    local body = default_reoffer(call, req)
    call.local_sdp = body
    -- a session refresh (RFC 4028) is answered with its Session-Expires
    req:reply(200, nil, { body = body, content_type = "application/sdp",
                          headers = timers.answer_headers(call, req) })
  elseif method == "UPDATE" then
    req:reply(200, nil, { headers = timers.answer_headers(call, req) })
  elseif method == "INFO" or method == "OPTIONS" or method == "MESSAGE" or method == "NOTIFY" then
    req:reply(200)
  else
    req:reply(405)
  end
end

-- events from the core (queued, run outside engine callbacks)
function M.call_event(call, name, msg)
  if name == "ack" then
    -- our 200 carried the offer: the ACK carries the answer
    if msg and msg.body ~= "" then
      set_remote_sdp(call, msg.body)
      if call.media then media.apply(call.media, msg.body, call._media_ours) end
    end
    call._acked = true
    if call.state == "answered" then call.state = "confirmed" end
    if call._se then timers.start(call) end
    -- an INVITE with Replaces: the call it replaces ends now (RFC 3891 3)
    local old = call.replaces
    if old and old.state ~= "ended" and old.state ~= "terminating" then
      spawn_with(nil, hangup, old, "replaced")
    end
    notify(call, ANSWER, "ack")
  elseif name == "prack" then
    -- the PRACK of our reliable 1xx: when that carried our offer (the
    -- INVITE had none), its SDP is the answer
    local body = sdp_body(msg)
    if body and not remote_offer(call) then
      set_remote_sdp(call, body)
      if call.media then media.apply(call.media, body, call._media_ours) end
    end
    call._prack_due = nil
    notify(call, PRACK, "prack")
  elseif name == "no_prack" then
    -- RFC 3262 3: no PRACK in 64*T1, and the core answered the INVITE 500
    call._prack_due = nil
    finish(call, "timeout")
  elseif name == "early" then
    -- UAC: a reliable 1xx. Its SDP answers our offer (early media), or
    -- is an offer (we sent none) that our PRACK answers
    local body = sdp_body(msg)
    if body then set_remote_sdp(call, body) end
    if msg.body ~= "" and not call.local_sdp then
      spawn_with(nil, function()
        local answer = body and (call._answer and call._answer(body) or
                                 sdp.default_answer(body, local_addr(call)))
        local sent = call:_prack(answer)
        if sent and answer then
          call.local_sdp = answer
          call._early_answer = true
        elseif sent and call.state == "calling" then
          -- no answer could be made: the PRACK went without, the call goes
          call:_cancel("no common codec")
        end
      end)
    end
  elseif name == "no_ack" then
    -- 13.3.1.4: no ACK for our 2xx: the session is over, say so
    notify(call, ANSWER, nil, "timeout")
    spawn_with(nil, function()
      if call.state ~= "ended" then
        call.state = "terminating"
        internal_bye = true
        call:request("BYE", { timeout = 5 })
        finish(call, "timeout")
      end
    end)
  elseif name == "bye" then
    finish(call, "bye")
  elseif name == "cancel" then
    finish(call, "cancel")
  elseif name == "request" then
    in_dialog_request(call, msg)
  elseif name == "failed" then
    if call.state == "calling" then finish(call, "failed", true) end
  elseif name == "closed" then
    finish(call, "closed", true)
  end
end

-- what happens when an INVITE handler returns (or fails)
local function handler_done(call, ok, a, b)
  if not ok then
    log("error", "INVITE handler failed: " .. a)
    if call.state == "incoming" or call.state == "early" then
      call:_reply(500)
      finish(call, "failed")
    end
    return
  end
  if call.state == "incoming" or call.state == "early" then
    if type(a) == "number" and a >= 300 then
      call:reject(a, b)
    elseif type(a) == "number" and a >= 200 then
      -- a returned 2xx answers (default SDP) and the call goes on
      spawn_with(nil, function() call:answer() end)
    else
      -- nobody answered and nobody can: say so rather than leave
      -- the caller ringing forever
      call:reject(480)
    end
  end
end

-- a new incoming call for ua's INVITE handler
-- an INVITE's admission: each fn(ua, call) may refuse it with a status
-- (and header lines): 422 for a session too short, sip.refer's 481 for a
-- Replaces that names no call
M.admits = { timers.admit }

function M.incoming_call(ua, call, fn)
  call.ua = ua
  call.state = "incoming"
  call_started()
  for _, admit in ipairs(M.admits) do
    local refused, hdrs = admit(ua, call)
    if refused then
      call:_reply(refused, nil, hdrs)
      finish(call, "rejected")
      return
    end
  end
  spawn_task(handler_done, call, fn, call, call)
end

-- -------------------------------------------------------------------------
-- UAC

--- @type UA

--- Place a call and wait until it is answered or fails.
-- Provisional responses do not end the wait, and a pending `ua:invite`
-- keeps the script running: without `timeout` it waits through a 100 or
-- a 180 for the final response. A 401 or 407 is answered with the
-- credentials and the INVITE sent again. Options:
--
-- - `sdp`: the offer; without it the INVITE has no body and the offer
--   of the 2xx is answered in the ACK (by `answer`, else the default
--   answer; with no codec in common the call is ACKed, then hung up)
-- - `headers`: extra headers (a Contact here replaces ours)
-- - `timeout`: seconds to wait for an answer, then CANCEL and
--   `nil, "timeout"`; without it Timer B (64·T1) when nothing answers
-- - `proxy`, `auth`, `from`, `to`, `call_id`, `cseq`, `contact`: as
--   `ua:request`
-- - `on_provisional`: `function(res)` for each 1xx, in a coroutine of
--   its own
-- - `on_call`: `function(call)` as soon as the INVITE is sent (state
--   `"calling"`), in a coroutine of its own: `call:hangup()` there sends
--   CANCEL and `ua:invite` returns `nil, "cancelled"`
-- - `answer`: `function(offer)` returning our SDP answer to the offer
--   of a 2xx (or of a reliable 1xx), when we sent none
-- - `reliable`: `true` sends `Supported: 100rel`, `"require"` sends
--   `Require: 100rel` (RFC 3262): a reliable 1xx (180, 183) then makes
--   the early dialog, and the core PRACKs it there (a copy of one, or one
--   out of order, is ignored, `on_provisional` included); its SDP answers
--   our offer (early media: `remote_sdp`), or, when we sent none, is an
--   offer the PRACK answers (`answer`, else the default answer). The 2xx
--   confirms that dialog
-- - `session_expires`: seconds (RFC 4028; default the UA's
--   `session_timer.expires`, none without; 0: none): the INVITE asks for a
--   session timer (Session-Expires, Min-SE, `Supported: timer`); a 422
--   is followed with its Min-SE; the 2xx settles who refreshes: we send
--   an UPDATE (a re-INVITE when the callee does not allow UPDATE) at half
--   the interval, or the callee must refresh, else we hang up (the call
--   ends `"session-expired"`)
-- @string uri the callee
-- @tab[opt] opts the options above
-- @treturn Call the call, `"confirmed"`
-- @return[2] nil
-- @treturn[2] string `"486 Busy Here"` (status and reason of the final
-- response), `"timeout"`, `"cancelled"`, `"no common codec"`,
-- `"transport: ..."`, `"tls: ..."`
-- @treturn[2] ?Message the final response, when there was one
function UA:invite(uri, opts)
  state.check_ua(self, "ua:invite")
  if type(uri) ~= "string" then
    error("bad argument #1 to 'ua:invite' (SIP URI string expected, got " .. type(uri) .. ")", 2)
  end
  if uri:find("%s") then
    error("bad argument #1 to 'ua:invite' (URI contains spaces or line breaks)", 2)
  end
  opts = check.opts(opts, "ua:invite", 2, INVITE_OPTS)
  check.lines(opts, "ua:invite", 2, { "contact", "from", "to", "call_id", "proxy" })
  local rel = opts.reliable
  if rel ~= nil and type(rel) ~= "boolean" and rel ~= "require" then
    check.arg(2, "ua:invite", "option 'reliable' must be true, false or \"require\"")
  end
  local co = current("ua:invite")
  local creds = auth.check_creds(opts.auth, "ua:invite") or state.auth[self]
  local auth_state = creds and auth.new_state(creds)
  local call, ok, why, res
  -- with media settings and no SDP of the script's, an RTP session
  -- and our offer on its port; closed again if the call fails
  local session, ours
  if opts.sdp == nil then
    local err
    session, err = new_session(self, ua_host(self))
    if err then return nil, err end
    if session then
      local cfg = ua_media[self]
      local o = {}
      for k, v in pairs(opts) do o[k] = v end
      o.sdp, ours = media.sdp(session, nil, { addr = cfg.addr, codecs = cfg.codecs })
      -- a 183's SDP points the session at the early media
      local user_prov = opts.on_provisional
      o.on_provisional = function(prov)
        if prov.body ~= "" and sdp_body(prov) then media.apply(session, prov.body, ours) end
        if user_prov then return user_prov(prov) end
      end
      opts = o
    end
  end
  -- a session timer asked for (RFC 4028): Session-Expires, Min-SE
  local se_h, se_asked, se_min = timers.invite_headers(self, opts)
  while true do
    local err
    local hdrs = extra_headers(opts)
    if rel then
      hdrs = (hdrs or "") .. (rel == "require" and "Require: 100rel\r\n" or "Supported: 100rel\r\n")
    end
    if se_h then hdrs = (hdrs or "") .. headers_text(se_h) end
    call, err = self:_invite(uri, opts, co, opts.proxy or state.proxies[self], hdrs)
    if not call then
      if session then session:close() end
      if err:find("^bad URI") then error("bad argument #1 to 'ua:invite' (" .. err .. ")", 2) end
      return nil, err
    end
    call.ua = self
    call.state = "calling"
    -- early media (a 183's SDP) reaches the session before the answer
    if session then
      attach_media(call, session)
      call._media_ours = ours
    end
    call_started()
    call.local_sdp = opts.sdp
    call._answer = opts.answer        -- a reliable 1xx's offer uses it too
    call._auth = opts.auth            -- BYE and re-INVITE use them too
    -- the call before an answer, e.g. for a forking B2BUA to hang up
    -- (CANCEL) the legs that lost
    if opts.on_call then
      spawn_with(function(okc, tb)
        if not okc then log("error", "on_call failed: " .. tb) end
      end, opts.on_call, call)
    end
    -- ended early (sip.first, the hangup of the call this coroutine
    -- belongs to): CANCEL, and the INVITE returns nil, reason
    ok, why, res = wait(function(_, reason) call:_cancel(reason) end)
    if ok then break end
    -- 401/407: the transaction ACKed it; a new INVITE answers (22.2)
    local extra = res and (res.status == 401 or res.status == 407) and
                  auth.answer(auth_state, res, "INVITE", uri, opts.sdp)
    -- 422: the session interval the callee takes at least (RFC 4028 6)
    local longer = se_h and res and timers.retry_interval(res, se_asked)
    if longer then
      se_asked = longer
      se_h["Session-Expires"], se_h["Min-SE"] = tostring(longer), tostring(longer)
      extra = extra or {}
    end
    if extra then call.media = nil end    -- the session serves the retry
    finish(call, why or "failed", true)   -- else it closes the session
    if not extra then return nil, why or "failed", res end
    opts = auth.retry_opts(opts, extra, res)
  end
  call.state = "confirmed"
  call.response = res
  if res then timers.answered(call, res, se_asked, se_min) end
  -- the 2xx's SDP is the peer's latest, over a reliable 1xx's
  if call._remote_sdp_text and sdp_body(res) then set_remote_sdp(call, nil) end
  if session and res and res.body ~= "" then media.apply(session, res.body, ours) end
  if res and res.body ~= "" then
    -- (an offer a PRACK answered is not offered again by its 2xx)
    if not opts.sdp and not call._early_answer then
      -- we sent no offer: the 2xx has one, our ACK answers it
      -- (opts.answer(offer_text) -> SDP, or the default answer)
      local answer = opts.answer and opts.answer(res.body)
      local bad
      if not answer then
        answer, bad = sdp.default_answer(res.body, local_addr(call))
      end
      call.local_sdp = answer
      call:_ack(answer)
      if not answer then
        -- an offer we cannot answer: the ACK goes out, then a BYE (13.2.2.4)
        call:hangup()
        return nil, bad or "no common codec", res
      end
    end
  end
  return call
end

M.hangup, M.wait_for, M.notify, M.session_for = hangup, wait_for, notify, session_for

return M
