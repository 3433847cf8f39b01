--- Bridging two calls (a B2BUA): `sip.bridge(a, b)` relays what one leg
-- asks of the session (re-INVITE, UPDATE, hold and resume, INFO) to the
-- other and the media between them, until one hangs up; `sip.b2bua(a,
-- uri)` places the B leg for an incoming call and bridges them. Loaded
-- by sip (init.lua); not required directly.
-- @module sip

local core = require "sip.core"
local sched = require "sip.sched"
local check = require "sip.check"
local sdp = require "sip.sdp"
local calls = require "sip.call"

local current, wait, wake_now, spawn_with, log =
  sched.current, sched.wait, sched.wake_now, sched.spawn_with, sched.log
local CallMT = core.Call

local M = {}

--- A bridge between two calls (`sip.Bridge`), made by `sip.bridge`.
-- Fields: `a`, `b` (the calls), `media` (`"relay"` or `"direct"`),
-- `state` (`"bridged"`, `"ended"` once a leg ended, `"unbridged"`),
-- `ended_by` (`"a"` or `"b"`) and `why` (that leg's `ended_why`).
-- @type Bridge
local Bridge = {}
local BridgeMT = { __index = Bridge, __name = "sip.Bridge" }

local RELAYED = { "reinvite", "update", "info" }  -- the hooks a bridge takes over
local LEG_TIMEOUT = 32                             -- a leg that does not answer in 64*T1: both go

local function other(br, call)
  return call == br.a and br.b or br.a
end

local function wake_all(br)
  local w = br._waiters
  br._waiters = nil
  for co in pairs(w or {}) do wake_now(co) end
end

-- the hooks and the relay go; the legs are left as they are
local function separate(br, state)
  if br.state ~= "bridged" then return end
  br.state = state
  for _, call in ipairs{ br.a, br.b } do
    call._bridge = nil
    local h = call._hooks
    if h then
      for _, k in ipairs(RELAYED) do h[k] = br._saved[call][k] end
    end
  end
  if br.media == "relay" and br.a.media and br.b.media then
    pcall(br.a.media.relay, br.a.media, nil)
  end
  for _, co in ipairs(br._watchers) do sched.cancel_wait(co, "unbridged") end
  wake_all(br)
end

-- a leg's request failed: the status to give the other leg, and whether
-- the failure ends the bridge (a leg that no longer answers)
local function failure(res, err)
  if res then return res.status, false end
  return err == "timeout" and 408 or 500, err == "timeout" or err == "hangup"
end

-- the SDP a relayed offer becomes on the other leg: as it is (direct), or
-- our own session towards that leg with the offer's direction (relay:
-- hold and resume pass, codecs stay what each leg agreed with us)
local function offer_for(br, to, req)
  if br.media == "direct" then return req.body end
  local p = sdp.parse(req.body)
  local dir = p and p.media[1] and p.media[1].direction or "sendrecv"
  return (sdp.update(calls.session_for(to), { direction = dir }))
end

-- a re-INVITE or an UPDATE of one leg, passed to the other; its answer
-- (direct) or our own (relay) answers it
local function relay_offer(br, from, req, method)
  local to = other(br, from)
  if req.body == "" then
    -- no offer: nothing for the other leg; the default answers
    return nil
  end
  local offer = offer_for(br, to, req)
  local res, err, r
  if method == "INVITE" then
    res, err, r = to:reinvite{ sdp = offer, timeout = br.request_timeout }
  else
    res, err, r = to:update{ sdp = offer, timeout = br.request_timeout }
  end
  if not res then
    local status, fatal = failure(r, err)
    if fatal then
      log("info", "bridge: the other leg did not answer the " .. method .. " (" .. tostring(err) ..
          "): both legs hung up")
      spawn_with(nil, function() to:hangup() end)
      spawn_with(nil, function() from:hangup() end)
    end
    return status
  end
  if br.media == "relay" then return nil end   -- the default answers from our session
  -- direct: the other leg's answer is ours
  from.local_sdp = res.body
  from.remote_sdp = nil
  from._remote_sdp_text = req.body
  return 200, nil, { body = res.body, content_type = "application/sdp" }
end

local function relay_info(br, from, req)
  local res, err = other(br, from):request("INFO", {
    body = req.body ~= "" and req.body or nil, content_type = req.content_type,
    timeout = br.request_timeout })
  if not res then return (failure(nil, err)) end
  return res.status
end

local BRIDGE_OPTS = { media = "string", request_timeout = "number" }

--- Join two calls until one of them ends (then the other is hung up).
-- What one leg asks of the session is asked of the other: a re-INVITE or
-- an UPDATE (hold and resume included; 491 and other refusals answer the
-- leg that asked), an INFO (DTMF relay); a leg that does not answer within
-- `opts.request_timeout` seconds (32) is taken for gone and both are hung
-- up. `opts.media`:
--
-- - `"relay"` (the default when both calls have RTP sessions): media is
--   anchored here, each packet passed from one session to the other (one
--   copy, no decoding when the legs use the same law; RFC 4733 events
--   get the other leg's payload type); the legs keep the SDP they agreed
--   with us;
-- - `"direct"` (the default otherwise): offers are passed as they are, so
--   RTP flows end to end (`sip.b2bua` gives the B leg the A leg's offer).
--
-- Raises for a call bridged to itself, an ended call, or one in another
-- bridge.
-- @tparam Call a a confirmed call
-- @tparam Call b another
-- @tab[opt] opts `media`
-- @treturn Bridge the bridge
function M.bridge(a, b, opts)
  for i, c in ipairs{ a, b } do
    if getmetatable(c) ~= CallMT then
      error("bad argument #" .. i .. " to 'sip.bridge' (sip.Call expected, got " .. type(c) .. ")", 2)
    end
  end
  if a == b then error("bad argument #2 to 'sip.bridge' (a call cannot be bridged to itself)", 2) end
  for i, c in ipairs{ a, b } do
    if c.state ~= "confirmed" and c.state ~= "answered" then
      error("bad argument #" .. i .. " to 'sip.bridge' (the call is " .. tostring(c.state) .. ")", 2)
    end
    if c._bridge then error("bad argument #" .. i .. " to 'sip.bridge' (the call is in a bridge)", 2) end
  end
  opts = check.opts(opts, "sip.bridge", 3, BRIDGE_OPTS)
  local mode = opts.media or (a.media and b.media and "relay" or "direct")
  if mode ~= "relay" and mode ~= "direct" then
    check.arg(3, "sip.bridge", "option 'media' must be \"relay\" or \"direct\"")
  end
  if mode == "relay" and not (a.media and b.media) then
    check.arg(3, "sip.bridge", "option 'media' \"relay\" needs an RTP session on both calls " ..
              "(sip.ua{ media = ... })")
  end
  local br = setmetatable({ a = a, b = b, media = mode, state = "bridged", _saved = {},
                            _watchers = {}, request_timeout = opts.request_timeout or LEG_TIMEOUT },
                          BridgeMT)
  for _, call in ipairs{ a, b } do
    call._bridge = br
    local h = call._hooks or {}
    call._hooks = h
    local saved = {}
    for _, k in ipairs(RELAYED) do saved[k] = h[k] end
    br._saved[call] = saved
    h.reinvite = function(c, req) return relay_offer(br, c, req, "INVITE") end
    h.update = function(c, req) return relay_offer(br, c, req, "UPDATE") end
    h.info = function(c, req) return relay_info(br, c, req) end
  end
  if mode == "relay" then a.media:relay(b.media) end
  -- the first leg to end ends the bridge, and the other leg with it
  for _, call in ipairs{ a, b } do
    br._watchers[#br._watchers + 1] = spawn_with(nil, function()
      local why = call:wait()
      if br.state ~= "bridged" or not why then return end
      br.ended_by = call == a and "a" or "b"
      br.why = why
      separate(br, "ended")
      other(br, call):hangup()
    end)
  end
  return br
end

--- Wait until a leg ends (the other is hung up then): which one and why.
-- @number[opt] timeout seconds
-- @treturn string `"a"` or `"b"`
-- @treturn string that leg's `ended_why` (`"bye"`, `"hangup"`...)
-- @return[2] nil
-- @treturn[2] string `"timeout"`, `"unbridged"`
function Bridge:wait(timeout)
  check.self(self, BridgeMT, "sip.Bridge", "br:wait")
  if self.state == "bridged" then
    local co = current("br:wait")
    self._waiters = self._waiters or {}
    self._waiters[co] = true
    local _ <close> = timeout and core.timer(timeout, co) or nil
    wait()
    if self._waiters then self._waiters[co] = nil end
    if self.state == "bridged" then return nil, "timeout" end
  end
  if self.state == "unbridged" then return nil, "unbridged" end
  return self.ended_by, self.why
end

--- Separate the calls without hanging up: each keeps its dialog and
-- its RTP session (to play a prompt to one, then bridge them again).
-- Waits in `br:wait` return `nil, "unbridged"`. Idempotent.
-- @treturn Bridge the bridge
function Bridge:unbridge()
  check.self(self, BridgeMT, "sip.Bridge", "br:unbridge")
  separate(self, "unbridged")
  return self
end

-- B2BUA ------------------------------------------------------------------

-- what the A leg is answered when every B leg failed
local function failed_status(res, err)
  if res and res.status >= 300 then return res.status end
  if err == "timeout" then return 408 end
  if err and err:find("codec") then return 488 end
  return 480
end

local B2BUA_OPTS = { media = "string", timeout = "number", headers = "table", from = "string",
                     to = "string", ua = "userdata", request_timeout = "number", on_bridge = "function" }

--- The common B2BUA: place the B leg (or legs: a list of URIs is
-- called in parallel, the first to answer wins and the others are
-- CANCELled) for the incoming call `a`, relay its 18x to A (with early
-- media), answer A when B answers, bridge them (`sip.bridge`) and return
-- when the call is over. When every B leg fails, A gets the failure
-- (486 for a busy B, 408 when nobody answered in `timeout`, 488 for no
-- common codec...). Options: `media` (`"direct"`: B gets A's offer and
-- A gets B's answer, RTP end to end; `"relay"`, the default when the UA
-- has media settings: each leg negotiates with us and RTP is anchored
-- here), `timeout` (seconds for B to answer, default 60), `headers` (for
-- the B leg's INVITE), `from` and `to` (the B leg's From and To values),
-- `ua` (the UA that places B, default A's), `request_timeout` (as
-- `sip.bridge`'s), `on_bridge` (`function(br)` once bridged: `br.b` is
-- the B leg that answered).
-- @tparam Call a an incoming call, not answered yet
-- @param uri the B leg's URI, or a list of them
-- @tab[opt] opts the options above
-- @treturn string `"a"` or `"b"`: which leg ended the call
-- @treturn string its `ended_why`
-- @return[2] nil
-- @treturn[2] string why B was not reached (`"486 Busy Here"`,
-- `"timeout"`, ...) or A went first (`"cancel"`)
function M.b2bua(a, uri, opts)
  if getmetatable(a) ~= CallMT then
    error("bad argument #1 to 'sip.b2bua' (sip.Call expected, got " .. type(a) .. ")", 2)
  end
  local uris = type(uri) == "table" and uri or { uri }
  for i, u in ipairs(uris) do
    if type(u) ~= "string" then
      error("bad argument #2 to 'sip.b2bua' (SIP URI or list of them expected; item " .. i ..
            " is " .. type(u) .. ")", 2)
    end
  end
  if #uris == 0 then error("bad argument #2 to 'sip.b2bua' (no URI)", 2) end
  opts = check.opts(opts, "sip.b2bua", 3, B2BUA_OPTS)
  local ua = opts.ua or a.ua
  local mode = opts.media or (a.media and "relay" or "direct")
  if mode ~= "relay" and mode ~= "direct" then
    check.arg(3, "sip.b2bua", "option 'media' must be \"relay\" or \"direct\"")
  end
  local co = current("sip.b2bua")
  if a.state ~= "incoming" and a.state ~= "early" then return nil, "call is " .. tostring(a.state) end
  local offer = a.invite.body ~= "" and a.invite.body or nil
  if mode == "direct" and not offer then
    -- a late offer cannot be passed through: anchor media if we can
    if not a.media and not (require("sip.state").media[ua]) then
      a:reject(488)
      return nil, "488 Not Acceptable Here"
    end
    mode = "relay"
  end
  local legs, winner, last_res, last_err = {}, nil, nil, nil
  local pending = #uris
  -- B's 18x reach A in order, one at a time (a reliable one waits for
  -- the PRACK of the one before), and A is answered only after them
  local early_q, early_busy, b_early_sdp = {}, false, nil
  local function relay_early()
    early_busy = true
    while #early_q > 0 do
      local b, prov = table.unpack(table.remove(early_q, 1))
      if a.state ~= "incoming" and a.state ~= "early" then break end
      if prov.status == 180 and a.state == "incoming" then
        a:ring()
      elseif prov.status == 183 and prov.body ~= "" then
        if mode == "direct" then
          b_early_sdp = prov.body
          a:progress{ sdp = prov.body }
        elseif a:progress() and a.media and b and b.media then
          a.media:relay(b.media)
        end
      end
    end
    early_busy = false
    if early_q.waiter then
      local w = early_q.waiter
      early_q.waiter = nil
      wake_now(w)
    end
  end
  local function early(b, prov)
    if a.state ~= "incoming" and a.state ~= "early" then return end
    if prov.status ~= 180 and prov.status ~= 183 then return end
    early_q[#early_q + 1] = { b, prov }
    if not early_busy then spawn_with(nil, relay_early) end
  end
  for _, u in ipairs(uris) do
    spawn_with(nil, function()
      local this
      local call, err, res = ua:invite(u, {
        sdp = mode == "direct" and offer or nil, timeout = opts.timeout or 60,
        headers = opts.headers, from = opts.from, to = opts.to,
        -- a caller that takes reliable 1xx: so does the B leg (RFC 3262)
        reliable = a:_peer_100rel() and true or nil,
        on_call = function(c) this = c; legs[#legs + 1] = c end,
        on_provisional = function(prov) early(this, prov) end,
      })
      pending = pending - 1
      if call and not winner and (a.state == "incoming" or a.state == "early") then
        winner = call
        -- the others lose: CANCEL (or BYE when they answered meanwhile)
        for _, l in ipairs(legs) do
          if l ~= call then spawn_with(nil, function() l:hangup() end) end
        end
        wake_now(co, "answered")
      elseif call then
        call:hangup()                     -- a second answer, or A is gone
      else
        last_res, last_err = res or last_res, err
        if pending == 0 and not winner then wake_now(co, "failed") end
      end
    end)
  end
  -- A may give up (CANCEL) while B rings: the B legs are CANCELled
  local watcher = spawn_with(nil, function()
    local why = a:wait()
    if why and not winner then
      for _, l in ipairs(legs) do spawn_with(nil, function() l:hangup() end) end
      wake_now(co, "a_gone")
    end
  end)
  local outcome = (winner and "answered") or (pending == 0 and "failed") or wait()
  if outcome ~= "a_gone" then sched.cancel_wait(watcher, "done") end
  if outcome == "a_gone" or a.state == "ended" then
    if winner then winner:hangup() end
    return nil, a.ended_why or "cancel"
  end
  if outcome ~= "answered" then
    a:reject(failed_status(last_res, last_err))
    return nil, last_err or "failed"
  end
  -- the 18x relayed so far go first
  while early_busy and (a.state == "incoming" or a.state == "early") do
    early_q.waiter = co
    wait()
  end
  local ok, err
  if mode == "direct" then
    -- B's answer: in its 2xx, or in a (reliable) 183 before it
    ok, err = a:answer{ sdp = winner.remote_sdp_text or b_early_sdp }
  else
    ok, err = a:answer()
  end
  if not ok then
    winner:hangup()
    return nil, err
  end
  local br = M.bridge(a, winner, { media = mode, request_timeout = opts.request_timeout })
  if opts.on_bridge then
    spawn_with(function(okb, tb)
      if not okb then log("error", "on_bridge failed: " .. tostring(tb)) end
    end, opts.on_bridge, br)
  end
  return br:wait()
end

return M
