--- Media verbs over an RTP session (sip.MediaSession, csrc/l_media.c):
-- play, record and tone block the calling coroutine until they end; sdp
-- and apply do the offer/answer for a session. Private: sip.call
-- requires it; every verb takes the session first so that a call can
-- install it as a method (call:play(...) is
-- media.play(call.media, ...)). Errors name the call method.
-- @module sip.media

local core = require "sip.core"
local sdp = require "sip.sdp"
local check = require "sip.check"

local sched = require "sip.sched"

local error, type, ipairs, getmetatable = error, type, ipairs, getmetatable

local current, wait = sched.current, sched.wait
local M = {}

local SessionMT = debug.getregistry()["sip.MediaSession"]

-- a session, or a raise naming the public method (level 3: the
-- caller of the verb)
local function check_session(session, fname)
  if getmetatable(session) ~= SessionMT then
    error(fname .. ": no media session (got " .. type(session) .. ")", 3)
  end
  return session
end

-- an unknown option or a wrong type raises naming the call method
-- (sip.check, as every public function does), at the caller's line
local function check_opts(opts, fname, argn, spec)
  if opts == nil then return nil end
  local checked = check.opts(opts, fname, argn, spec, 3)     -- not a tail call: one level
  return checked
end

local function non_negative(opts, names, fname)
  if not opts then return end
  for _, k in ipairs(names) do
    local v = opts[k]
    if v and v < 0 then check.arg(2, fname, "option '" .. k .. "' must not be negative", 3) end
  end
end

local PLAY_OPTS = { loop = "boolean", barge = "boolean" }

--- Play a WAV file, or a list of them in order, and wait until the end.
-- @param session sip.MediaSession
-- @param files a file name or a list of them
-- @tab[opt] opts loop (until stopped), barge (a digit stops it)
-- @return true when played to the end
-- @return[2] nil, reason: "file: ..." before anything was sent, "stopped",
-- "hangup" (the reason the session was stopped or closed with)
-- @return[3] nil, "digit", the digit (barge)
function M.play(session, files, opts)
  check_session(session, "call:play")
  local tf = type(files)
  if tf == "table" then
    if #files == 0 then check.arg(1, "call:play", "an empty list of files") end
    for i, f in ipairs(files) do
      if type(f) ~= "string" then
        check.arg(1, "call:play", "file " .. i .. " must be a string, got " .. type(f))
      end
    end
  elseif tf ~= "string" then
    check.arg(1, "call:play", "file name or list of file names expected, got " .. tf)
  end
  opts = check_opts(opts, "call:play", 2, PLAY_OPTS)
  local co = current("call:play")
  local ok, err = session:_play(files, opts, co)
  if not ok then return nil, err end
  -- ended early (sip.first, a hangup): stopped, and it returns nil, reason
  return wait(function(_, reason) session:stop(reason, "play") end)
end

local RECORD_OPTS = { max = "number", silence = "number", threshold = "number",
                      beep = "boolean", format = "string" }
local FORMATS = { pcm16 = true, ulaw = true, alaw = true }

--- Record what the peer sends to a WAV file, until `max` seconds, `silence`
-- seconds without voice, or a stop.
-- @param session sip.MediaSession
-- @string path the WAV file (created or truncated)
-- @tab[opt] opts max, silence (seconds), threshold (mean amplitude of
-- voice, 0..32767, default 256), beep (a beep first), format ("pcm16",
-- "ulaw", "alaw")
-- @return { duration = seconds, reason = "max" | "silence" | "stopped" |
-- "hangup" | ... }
-- @return[2] nil, "file: ..." when the file cannot be written
function M.record(session, path, opts)
  check_session(session, "call:record")
  check.type(path, "string", 1, "call:record")
  opts = check_opts(opts, "call:record", 2, RECORD_OPTS)
  non_negative(opts, { "max", "silence", "threshold" }, "call:record")
  if opts and opts.format and not FORMATS[opts.format] then
    check.arg(2, "call:record", "option 'format' must be \"pcm16\", \"ulaw\" or \"alaw\"")
  end
  local co = current("call:record")
  local ok, err = session:_record(path, opts, co)
  if not ok then return nil, err end
  -- ended early (sip.first, a hangup): stopped, and it returns nil, reason
  return wait(function(_, reason) session:stop(reason, "record") end)
end

local TONE_OPTS = { duration = "number", level = "number" }
local TONE_SPEC = { freqs = "table", on = "number", off = "number" }
local TONES = { ring = true, busy = true, dial = true, beep = true }

--- Play a tone and wait until it ends (after `duration` seconds; a beep
-- lasts a quarter second by itself, other tones run until stopped).
-- @param session sip.MediaSession
-- @param what "ring", "busy", "dial", "beep", or { freqs = { f1[, f2] },
-- on = ms, off = ms }
-- @tab[opt] opts duration (seconds), level (dBm0, default -13)
-- @return true, or nil and the reason it was stopped
function M.tone(session, what, opts)
  check_session(session, "call:tone")
  if type(what) == "string" then
    if not TONES[what] then
      check.arg(1, "call:tone", "unknown tone '" .. what .. "' (ring, busy, dial, beep or a table)")
    end
  elseif type(what) == "table" then
    check_opts(what, "call:tone", 1, TONE_SPEC)
    local f = what.freqs
    if type(f) ~= "table" or #f < 1 or #f > 2 then
      check.arg(1, "call:tone", "freqs must be a list of one or two frequencies")
    end
  else
    check.arg(1, "call:tone", "tone name or table expected, got " .. type(what))
  end
  opts = check_opts(opts, "call:tone", 2, TONE_OPTS)
  if opts and opts.duration and opts.duration <= 0 then
    check.arg(2, "call:tone", "option 'duration' must be positive")
  end
  local co = current("call:tone")
  local ok, err = session:_tone(what, opts, co)
  if not ok then return nil, err end
  -- ended early (sip.first, a hangup): stopped, and it returns nil, reason
  return wait(function(_, reason) session:stop(reason, "play") end)
end

local SDP_OPTS = { addr = "string", codecs = "table", direction = "string" }
local DEFAULT_CODECS = { "PCMU", "PCMA", "telephone-event" }

--- SDP for a session: an answer to `offer` (text or parsed table) when
-- one is given, else an offer, on the session's port.
-- @param session sip.MediaSession
-- @param[opt] offer the peer's offer
-- @tab[opt] opts addr (default the session's address), codecs (names,
-- default PCMU, PCMA, telephone-event), direction
-- @treturn string SDP text (or fail, message for an unparsable offer)
-- @treturn table the SDP session (for sip.sdp.update and media.apply)
function M.sdp(session, offer, opts)
  check_session(session, "media.sdp")
  opts = check_opts(opts, "media.sdp", 2, SDP_OPTS) or {}
  local o = { addr = opts.addr or session:local_addr(), port = session:local_port(),
              codecs = opts.codecs or DEFAULT_CODECS, direction = opts.direction }
  if offer ~= nil then return sdp.answer(offer, o) end
  return sdp.offer(o)
end

local function can(dir)
  return dir == "sendrecv" or dir == "sendonly", dir == "sendrecv" or dir == "recvonly"
end

-- both directions at once: what both allow
local function combine(a, b)
  local sa, ra = can(a)
  local sb, rb = can(b)
  local s, r = sa and sb, ra and rb
  return s and r and "sendrecv" or s and "sendonly" or r and "recvonly" or "inactive"
end

local SENDABLE = { PCMU = true, PCMA = true }

--- Point a session at the peer's SDP (an offer we answered, or the
-- answer to our offer): its address and port, the first G.711 codec it
-- lists (that ours lists too), its a=ptime, telephone-event, and the
-- direction both sides allow. A stream it refused (port 0) or put on hold
-- makes the session stop sending.
-- @param session sip.MediaSession
-- @param remote the peer's SDP, text or parsed
-- @tab[opt] ours our SDP session table (second result of media.sdp)
-- @return true, or fail and a message
function M.apply(session, remote, ours)
  check_session(session, "media.apply")
  if type(remote) == "string" then
    local parsed, err = sdp.parse(remote)
    if not parsed then return nil, err end
    remote = parsed
  elseif type(remote) ~= "table" then
    check.arg(1, "media.apply", "SDP text or table expected, got " .. type(remote))
  end
  local mine = ours and ours.media
  for i, m in ipairs(remote.media or {}) do
    local our_m = mine and mine[i]
    if m.media == "audio" and (not our_m or our_m.port ~= 0) then
      local allowed = nil
      if our_m then
        allowed = {}
        for _, c in ipairs(our_m.codecs or {}) do allowed[c.name:upper()] = true end
      end
      local send, te
      for _, c in ipairs(m.codecs or {}) do
        local name = c.name and c.name:upper()
        if name and (not allowed or allowed[name]) then
          if not send and SENDABLE[name] and (c.rate or 8000) == 8000 then send = c end
          if not te and name == "TELEPHONE-EVENT" then te = c end
        end
      end
      if send then
        local ptime
        for _, a in ipairs(m.attributes or {}) do
          if a.name == "ptime" then ptime = tonumber(a.value) end
        end
        -- only what a session can honour: 10..120 ms in steps of 10
        if ptime and (ptime < 10 or ptime > 120 or ptime % 10 ~= 0) then ptime = nil end
        local addr = m.addr or remote.addr
        if not addr then return nil, "sdp: no connection address" end
        local ok, err = session:set_remote{ addr = addr, port = m.port, pt = send.pt,
          codec = send.name:upper(), ptime = ptime, telephone_event_pt = te and te.pt }
        if not ok then return nil, err end
        -- events on the payload type our own SDP gave telephone-event
        local our_te
        for _, c in ipairs(our_m and our_m.codecs or {}) do
          if c.name and c.name:upper() == "TELEPHONE-EVENT" then our_te = c.pt end
        end
        if our_te and our_te ~= send.pt and our_te ~= 0 and our_te ~= 8 then
          session:set_local_te_pt(our_te)
        end
        local dir = sdp.mirror[m.direction or "sendrecv"] or "sendrecv"
        if m.port == 0 or addr == "0.0.0.0" then dir = "inactive" end
        if our_m then dir = combine(dir, our_m.direction or "sendrecv") end
        session:direction(dir)
        return true
      end
    end
  end
  session:direction("inactive")
  return nil, "sdp: no audio stream with PCMU or PCMA"
end

--- A new RTP session (sip.core.media.session).
-- @tab[opt] opts addr, ports ("low-high")
M.session = core.media.session

return M
