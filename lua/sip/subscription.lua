--- Subscriptions (RFC 6665): `ua:subscribe` (the subscriber) and
-- `ua:on("SUBSCRIBE", fn(sub))` (the notifier), on dialogs of their own
-- (`sip.core.dialog`). The core answers what RFC 6665 leaves to a
-- library: the first NOTIFY's dialog (it may come before the 2xx),
-- refreshes before expiry, expiry timers, un-SUBSCRIBE, Event and
-- Subscription-State, 481 for what no subscription knows.
-- Loaded by sip (init.lua); not required directly.
-- @module sip

local core = require "sip.core"
local sched = require "sip.sched"
local state = require "sip.state"
local class = require "sip.class"
local check = require "sip.check"

local current, wait, wake_now, spawn_with, spawn_task, log =
  sched.current, sched.wait, sched.wake_now, sched.spawn_with, sched.spawn_task, sched.log
local headers_text = core.headers_text
local UA = class.methods(core.UA)

local M = {}

--- A subscription (`sip.Subscription`): ours (`ua:subscribe`), or a
-- peer's to us (given to `ua:on("SUBSCRIBE", fn)`). One per dialog.
--
-- Fields:
--
-- - `role`: `"subscriber"` or `"notifier"`
-- - `event`: the event package (`"presence"`, `"message-summary"`...)
-- - `id`: the Event header's id parameter, or nil
-- - `state`: `"init"` (a notifier that has not answered yet),
--   `"pending"`, `"active"` or `"terminated"`
-- - `reason`: once terminated: the Subscription-State reason
--   (`"timeout"`, `"noresource"`, `"rejected"`, `"deactivated"`...), or
--   what ended it here: `"481"`, `"closed"` (the UA was closed), `"bye"`
-- - `expires`: seconds granted, as last agreed
-- - `request`: the notifier's SUBSCRIBE (a `Message`)
-- - `uri`: the subscriber's Request-URI
-- - `call_id`: the dialog's Call-ID
-- - `body`, `content_type`: the notifier's state as last sent
-- @type Subscription
local Subscription = {}
local SubMT = { __index = Subscription, __name = "sip.Subscription" }
M.Subscription = SubMT

local DEFAULT_EXPIRES = 3600    -- RFC 6665 leaves it to the package; presence says 3600
local FIRST_NOTIFY = 32         -- 64*T1: no NOTIFY after the 2xx, it failed (4.1.2.4)
local MAX_QUEUED = 100          -- NOTIFYs kept for sub:notifies() when nobody reads them

local pending = setmetatable({}, { __mode = "k" })  -- ua -> { [call_id] = sub } before the first NOTIFY
local live = setmetatable({}, { __mode = "k" })     -- ua -> notifier subscriptions open
local limits = setmetatable({}, { __mode = "k" })   -- ua -> max_subscriptions

-- "presence;id=5" -> "presence", "5"
local function parse_event(v)
  if not v then return nil end
  local pkg, params = v:match("^%s*([^;%s]+)%s*(.*)$")
  if not pkg then return nil end
  return pkg:lower(), params:match(";%s*[iI][dD]%s*=%s*([^;%s]+)")
end

-- "active;expires=600" -> { state =, expires =, reason =, retry_after = }
local function parse_state(v)
  if not v then return nil end
  local st, params = v:match("^%s*([%a%-]+)%s*(.*)$")
  if not st then return nil end
  local s = { state = st:lower() }
  for k, val in params:gmatch(";%s*([%w%-]+)%s*=?%s*([^;]*)") do
    k = k:lower()
    val = val:match("^(.-)%s*$")
    if k == "expires" then s.expires = tonumber(val)
    elseif k == "reason" then s.reason = val:lower()
    elseif k == "retry-after" then s.retry_after = tonumber(val) end
  end
  return s
end

local function event_value(sub)
  return sub.id and (sub.event .. ";id=" .. sub.id) or sub.event
end

-- the timer coroutine of a subscription: sleeps until sub._deadline
-- (refresh for a subscriber, expiry for a notifier), and is woken early
-- with "again" when the deadline moves or the subscription ends
local function rearm(sub, at)
  sub._deadline = at
  local co = sub._clock
  if co then wake_now(co, "again") end
end

local function ended(sub, reason)
  if sub.state == "terminated" then return false end
  sub.state = "terminated"
  sub.reason = sub.reason or reason
  if sub._dialog then sub._dialog:close() end
  if sub._unpend then sub._unpend() end
  if sub.role == "notifier" and sub.ua and live[sub.ua] then
    live[sub.ua] = live[sub.ua] - 1
  end
  rearm(sub, nil)
  -- the waiters: sub:wait, sub:notifies, ua:subscribe
  local w = sub._waiters
  sub._waiters = nil
  for co in pairs(w or {}) do wake_now(co, "ended") end
  return true
end

local function wake_all(sub, why)
  local w = sub._waiters
  if not w then return end
  local list = {}
  for co in pairs(w) do list[#list + 1] = co end
  for _, co in ipairs(list) do
    w[co] = nil
    wake_now(co, why)
  end
end

-- park the running coroutine among sub's waiters, for timeout seconds at most
local function park(sub, fname, timeout)
  local co = current(fname)
  sub._waiters = sub._waiters or {}
  sub._waiters[co] = true
  local _ <close> = timeout and core.timer(timeout, co) or nil
  local why = wait()
  if sub._waiters then sub._waiters[co] = nil end
  return why == true and "timeout" or why
end

local function reply(req, status, reason, headers)
  local ok, err = req:reply(status, reason, headers and { headers = headers } or nil)
  if not ok and err ~= "already answered" then
    log("warn", "reply " .. status .. " to " .. req.method .. ": " .. tostring(err))
  end
end

-- a request within the dialog; nil, err when none could be sent
local function dialog_request(sub, method, headers, body, content_type)
  local d = sub._dialog
  if not d then return nil, "no dialog" end
  local co = current("sip.Subscription")
  local ok, err = d:request(method, body and { body = body, content_type = content_type } or nil,
                            co, headers_text(headers))
  if not ok then return nil, err end
  return wait()
end

-- Subscriber -------------------------------------------------------------

local function deliver(sub, n, quiet)
  sub.last = n
  if sub._on_notify then
    spawn_with(function(ok, tb)
      if not ok then log("error", "notify hook failed: " .. tostring(tb)) end
    end, sub._on_notify, sub, n)
  else
    local q = sub._queue
    q.tail = q.tail + 1
    q[q.tail] = n
    if q.tail - q.head >= MAX_QUEUED then
      q[q.head] = nil
      q.head = q.head + 1
    end
  end
  if not quiet then wake_all(sub, "notify") end
end

-- a NOTIFY within our subscription's dialog
local function on_notify(sub, req)
  local pkg, id = parse_event(req:header("Event"))
  if not pkg then
    return reply(req, 400, "Missing Event header")
  end
  if pkg ~= sub.event or id ~= sub.id then
    return reply(req, 489, "Bad Event")
  end
  local s = parse_state(req:header("Subscription-State"))
  if not s then
    return reply(req, 400, "Missing Subscription-State header")
  end
  reply(req, 200)
  local n = { state = s.state, reason = s.reason, expires = s.expires, retry_after = s.retry_after,
              body = req.body, content_type = req.content_type, request = req }
  sub.got_notify = true
  if s.state == "terminated" then
    sub.reason = s.reason or "noresource"
    sub.retry_after = s.retry_after
    deliver(sub, n, true)   -- ended() wakes the waiters, once
    ended(sub)
    return
  end
  if sub.state ~= "terminated" then sub.state = s.state end
  -- a shorter expiry from the notifier moves our refresh (4.1.2.3)
  if s.expires and s.expires < (sub._expires_at or math.huge) - core.now() then
    sub.expires = s.expires
    sub._expires_at = core.now() + s.expires
    rearm(sub, core.now() + (s.expires > 64 and s.expires - 32 or s.expires / 2))
  end
  deliver(sub, n)
end

local function subscriber_request(sub, req)
  local m = req.method
  if m == "NOTIFY" then
    on_notify(sub, req)
  elseif m == "BYE" then
    ended(sub, "bye")       -- answered 200 by the core
  else
    reply(req, 405, nil, { Allow = "NOTIFY" })
  end
end

-- refresh, or resubscribe with Expires 0; the 2xx's Expires is granted
local function send_subscribe(sub, expires)
  local h = { Event = event_value(sub), Expires = tostring(expires) }
  if sub._accept then h.Accept = sub._accept end
  for k, v in pairs(sub._headers or {}) do h[k] = h[k] or v end
  return dialog_request(sub, "SUBSCRIBE", h)
end

local function refresh(sub)
  local res, err = send_subscribe(sub, sub._asked)
  if sub.state == "terminated" then return end
  if res and res.status == 423 then
    -- Interval Too Brief: ask for what it takes
    local min = tonumber(res:header("Min-Expires") or "")
    if min and min > sub._asked then
      sub._asked = min
      res, err = send_subscribe(sub, min)
      if sub.state == "terminated" then return end
    end
  end
  if res and res.status >= 200 and res.status < 300 then
    local e = tonumber(res:header("Expires") or "") or sub._asked
    sub.expires = e
    sub._expires_at = core.now() + e
    sub._deadline = core.now() + (e > 64 and e - 32 or e / 2)
    sub.refreshes = (sub.refreshes or 0) + 1
    return
  end
  -- 481, a timeout, anything else: the subscription is gone (4.1.2.2)
  log("info", "subscription " .. sub.uri .. ": refresh failed: " ..
      (res and (res.status .. " " .. res.reason) or tostring(err)))
  ended(sub, res and tostring(res.status) or (err == "timeout" and "timeout" or tostring(err)))
end

-- the clock of a subscription: refresh (subscriber) or expiry (notifier)
local function clock(sub, on_deadline)
  sub._clock = current("sip.Subscription")
  while sub.state ~= "terminated" do
    local at = sub._deadline
    if at and at <= core.now() then
      sub._deadline = nil
      on_deadline(sub)
    else
      local _ <close> = at and core.timer(at - core.now(), sub._clock) or nil
      wait()
    end
  end
  sub._clock = nil
end

-- the NOTIFY makes (or joins) the dialog of our SUBSCRIBE
local function attach_dialog(sub, req)
  local d, err = core.dialog(sub.ua, req, sub, sub._cseq or 1)
  if not d then
    reply(req, 500, err)
    return false
  end
  sub._dialog = d
  sub.call_id = req.call_id
  return true
end

-- A NOTIFY no dialog matched (from C, "orphan"): the first of a
-- subscription of ours, or a fork's; else 481.
local function start_clock(sub)
  local e = sub.expires
  local at = core.now() + (e > 64 and e - 32 or e / 2)
  if not sub._deadline or sub._deadline > at then sub._deadline = at end
  spawn_with(nil, clock, sub, refresh)
end

-- a NOTIFY from another fork of our SUBSCRIBE: a subscription of its own
-- for on_fork (RFC 6665 4.1.2.4)
local function fork_of(sub, req)
  local fork = setmetatable({
    role = "subscriber", ua = sub.ua, uri = sub.uri, event = sub.event, id = sub.id,
    state = "init", expires = sub.expires, fork_of = sub, _asked = sub._asked,
    _accept = sub._accept, _headers = sub._headers, _queue = { head = 1, tail = 0 },
    _cseq = sub._cseq, _expires_at = sub._expires_at,
  }, SubMT)
  if not attach_dialog(fork, req) then return end
  subscriber_request(fork, req)             -- its first NOTIFY, queued
  if fork.state ~= "terminated" then start_clock(fork) end
  spawn_with(function(ok, tb)
    if not ok then log("error", "on_fork failed: " .. tostring(tb)) end
  end, sub._on_fork, sub, fork)
end

function M.orphan(ua, req)
  local sub = pending[ua] and pending[ua][req.call_id]
  if sub and sub._dialog and sub._dialog_tag ~= req.from_tag and sub._on_fork and
     sub.state ~= "terminated" then
    return fork_of(sub, req)
  end
  if not sub or (sub._dialog and sub._dialog_tag ~= req.from_tag) then
    -- unknown, or another fork of one that has its dialog: the notifier
    -- ends it on 481 (RFC 6665 4.1.2.4 lets the subscriber keep one)
    return reply(req, 481)
  end
  if not sub._dialog then
    if not attach_dialog(sub, req) then return end
    sub._dialog_tag = req.from_tag
  end
  subscriber_request(sub, req)
end

local SUBSCRIBE_OPTS = {
  event = "string", accept = "string", expires = "number", headers = "table", body = "string",
  content_type = "string", timeout = "number", id = "string", proxy = "string",
  auth = "table|function", from = "string", to = "string", on_notify = "function",
  on_fork = "function",
}

--- @type UA

--- Subscribe to `event` at `uri` (RFC 6665) and wait for the first NOTIFY.
-- The core keeps the subscription: it refreshes it before it expires
-- (with the Expires the notifier granted), answers each NOTIFY, and ends
-- it on a terminated NOTIFY, a failed refresh or `sub:unsubscribe()`.
-- A NOTIFY that comes before the 2xx is taken; NOTIFYs from other forks
-- get 481 unless `on_fork` takes them (the first to arrive is `sub`). A 401/407 is answered as in
-- `ua:request`. Options:
--
-- - `event` (required): the package, e.g. `"presence"`, `"dialog"`,
--   `"message-summary"`
-- - `id`: the Event header's id parameter
-- - `accept`: the Accept header (`"application/pidf+xml"`)
-- - `expires`: seconds asked for (3600)
-- - `headers`, `body`, `content_type`, `proxy`, `auth`, `from`, `to`: as in
--   `ua:request`
-- - `timeout`: seconds to wait for the response and the first NOTIFY
--   (default: Timer F for the response, then 32 s for the NOTIFY)
-- - `on_notify`: `function(sub, n)` for each NOTIFY, from the first (then
--   `sub:notifies()` gets none)
-- - `on_fork`: `function(sub, fork)`: a NOTIFY from another fork of the
--   SUBSCRIBE (a proxy forked it, RFC 6665 4.1.2.4) makes a subscription
--   of its own, `fork` (`fork.fork_of` is `sub`), refreshed like `sub`,
--   with that NOTIFY first in `fork:notifies()`. Without it, such a
--   NOTIFY gets 481 and the notifier ends that fork.
-- @string uri the Request-URI
-- @tab opts the options above
-- @treturn Subscription the subscription; its `state` is the first
-- NOTIFY's (`"terminated"` when the notifier refused at once)
-- @return[2] nil
-- @treturn[2] string `"489 Bad Event"` (status and reason), `"timeout"`,
-- `"closed"`, `"transport: ..."`
-- @treturn[2] ?Message the response, when there was one
function UA:subscribe(uri, opts)
  state.check_ua(self, "ua:subscribe")
  if type(uri) ~= "string" or uri:find("%s") then
    error("bad argument #1 to 'ua:subscribe' (SIP URI string expected)", 2)
  end
  opts = check.opts(opts, "ua:subscribe", 2, SUBSCRIBE_OPTS)
  check.lines(opts, "ua:subscribe", 2, { "event", "accept", "id", "content_type", "from", "to", "proxy" })
  if not opts.event or not opts.event:match("^[%w%-%.!%%%*_%+`'~]+$") then
    check.arg(2, "ua:subscribe", "option 'event' must be an event package name")
  end
  if opts.expires and opts.expires < 0 then
    check.arg(2, "ua:subscribe", "option 'expires' must not be negative")
  end
  current("ua:subscribe")
  local call_id = core.token(20)
  local sub = setmetatable({
    role = "subscriber", ua = self, uri = uri, event = opts.event:lower(), id = opts.id,
    state = "init", expires = opts.expires or DEFAULT_EXPIRES, call_id = call_id,
    _asked = opts.expires or DEFAULT_EXPIRES, _accept = opts.accept, _headers = opts.headers,
    _on_notify = opts.on_notify, _on_fork = opts.on_fork, _queue = { head = 1, tail = 0 },
  }, SubMT)
  local h = { Event = event_value(sub), Expires = tostring(sub._asked) }
  if opts.accept then h.Accept = opts.accept end
  for k, v in pairs(opts.headers or {}) do h[k] = h[k] or v end
  local by_cid = pending[self] or {}
  pending[self] = by_cid
  by_cid[call_id] = sub
  self:_subscribing(1)
  -- no longer taking a first NOTIFY (once)
  local function stop_waiting()
    if by_cid[call_id] == sub then
      by_cid[call_id] = nil
      self:_subscribing(-1)
    end
  end
  local started = core.now()
  local res, err = self:request("SUBSCRIBE", uri, {
    headers = h, body = opts.body, content_type = opts.content_type, timeout = opts.timeout,
    proxy = opts.proxy, auth = opts.auth, from = opts.from, to = opts.to, call_id = call_id,
  })
  local function give_up(why, r)
    stop_waiting()
    if sub._dialog then sub._dialog:close() end
    sub.state = "terminated"
    sub.reason = why
    return nil, why, r
  end
  if not res then return give_up(err) end
  if res.status >= 300 then
    return give_up(res.status .. " " .. res.reason, res)
  end
  sub.response = res
  sub._cseq = res.cseq
  if sub._dialog then sub._dialog:set_cseq(res.cseq) end
  local e = tonumber(res:header("Expires") or "") or sub._asked
  sub.expires = e
  sub._expires_at = core.now() + e
  if not sub.got_notify and sub.state ~= "terminated" then
    local left = opts.timeout and math.max(opts.timeout - (core.now() - started), 0.001) or FIRST_NOTIFY
    park(sub, "ua:subscribe", left)
  end
  if not sub.got_notify then
    -- 2xx without a NOTIFY in time: failed (4.1.2.4)
    return give_up(sub.state == "terminated" and (sub.reason or "closed") or "timeout", res)
  end
  if sub._on_fork and sub.state ~= "terminated" then
    sub._unpend = stop_waiting    -- forks may come while it lives
  else
    stop_waiting()
  end
  if sub.state ~= "terminated" then start_clock(sub) end
  return sub
end

--- @type Subscription

--- Iterate over the NOTIFYs of our subscription, as they come: each is
-- `{ state =, reason =, expires =, retry_after =, body =, content_type =,
-- request = }`. The first NOTIFY (the one `ua:subscribe` waited for) is
-- the first. The loop ends after the terminated one, or after `timeout`
-- seconds without one.
-- @number[opt] timeout seconds without a NOTIFY that end the loop
-- @treturn function the iterator
function Subscription:notifies(timeout)
  check.self(self, SubMT, "sip.Subscription", "sub:notifies")
  if self.role ~= "subscriber" then
    error("bad self to 'sub:notifies' (a notifier's subscription receives no NOTIFY)", 2)
  end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout <= 0) then
    error("bad argument #1 to 'sub:notifies' (positive number expected)", 2)
  end
  local q = self._queue
  return function()
    if q.head > q.tail then
      if self.state == "terminated" then return nil end
      local why = park(self, "sub:notifies", timeout)
      if why == "timeout" or q.head > q.tail then return nil end
    end
    local n = q[q.head]
    q[q.head] = nil
    q.head = q.head + 1
    return n
  end
end

--- Run `fn` for each NOTIFY, in a coroutine of its own: `"notify"`,
-- `fn(sub, n)` (`n` as in `sub:notifies`). NOTIFYs already queued for
-- `sub:notifies` stay there.
-- @string what `"notify"`
-- @func fn
-- @treturn Subscription the subscription
function Subscription:on(what, fn)
  check.self(self, SubMT, "sip.Subscription", "sub:on")
  if what ~= "notify" then
    error("bad argument #1 to 'sub:on' (\"notify\" expected, got " .. tostring(what) .. ")", 2)
  end
  if type(fn) ~= "function" then
    error("bad argument #2 to 'sub:on' (function expected, got " .. type(fn) .. ")", 2)
  end
  self._on_notify = fn
  return self
end

--- End our subscription: SUBSCRIBE with Expires 0, then the NOTIFY that
-- says terminated (waited for `timeout` seconds, 5 by default).
-- Idempotent: true at once when it is over already.
-- @number[opt=5] timeout
-- @treturn boolean true
-- @return[2] nil
-- @treturn[2] string what went wrong (`"timeout"`, `"481 ..."`); the
-- subscription is over all the same
function Subscription:unsubscribe(timeout)
  check.self(self, SubMT, "sip.Subscription", "sub:unsubscribe")
  if self.role ~= "subscriber" then
    error("bad self to 'sub:unsubscribe' (a notifier uses sub:terminate)", 2)
  end
  if self.state == "terminated" then return true end
  local res, err = send_subscribe(self, 0)
  if self.state == "terminated" then return true end
  if not res or res.status >= 300 then
    ended(self, "unsubscribed")
    return nil, res and (res.status .. " " .. res.reason) or err
  end
  local deadline = core.now() + (timeout or 5)
  while self.state ~= "terminated" do
    local left = deadline - core.now()
    if left <= 0 or park(self, "sub:unsubscribe", left) == "timeout" then
      ended(self, "unsubscribed")
      return nil, "timeout"
    end
  end
  return true
end

--- Wait until the subscription ends (either side).
-- @number[opt] timeout seconds
-- @treturn ?string the reason (`sub.reason`), nil after `timeout`
-- @treturn[2] string `"timeout"`
function Subscription:wait(timeout)
  check.self(self, SubMT, "sip.Subscription", "sub:wait")
  while self.state ~= "terminated" do
    local why = park(self, "sub:wait", timeout)
    if why == "timeout" then return nil, "timeout" end
  end
  return self.reason
end

-- Notifier ---------------------------------------------------------------

-- one NOTIFY at a time per subscription: the next waits for the last's
-- final response (RFC 6665 4.2.2 orders them by CSeq anyway)
local function send_notify(sub, st, reason, retry_after)
  while sub._notifying do
    local co = current("sub:notify")
    sub._notify_q = sub._notify_q or {}
    table.insert(sub._notify_q, co)
    wait()
  end
  sub._notifying = true
  local ss = st
  if st == "terminated" then
    ss = ss .. ";reason=" .. (reason or "noresource")
    if retry_after then ss = ss .. ";retry-after=" .. math.floor(retry_after) end
  else
    local left = math.max(math.floor((sub._expires_at or core.now()) - core.now() + 0.5), 0)
    ss = ss .. ";expires=" .. left
  end
  local res, err = dialog_request(sub, "NOTIFY", { Event = event_value(sub), ["Subscription-State"] = ss },
                                  sub.body, sub.body and sub.content_type or nil)
  sub._notifying = false
  local q = sub._notify_q
  if q and #q > 0 then
    local co = table.remove(q, 1)
    wake_now(co)
  end
  if res and res.status < 300 then return true end
  local why = res and (res.status .. " " .. res.reason) or err
  -- 481, a timeout or a transport failure end it (4.2.2)
  if st ~= "terminated" and (not res or res.status == 481 or res.status == 408) then
    ended(sub, res and tostring(res.status) or "timeout")
  end
  return nil, why
end

-- the state a notifier sends from now on (refreshes send it again)
local function keep_body(sub, opts)
  if opts.body then
    sub.body = opts.body
    sub.content_type = opts.content_type or sub.content_type or "text/plain"
  end
end

local function expire(sub)
  if sub.state == "terminated" then return end
  spawn_with(nil, function()
    send_notify(sub, "terminated", "timeout")
    ended(sub, "timeout")
  end)
end

local function notifier_request(sub, req)
  if req.method == "BYE" then
    ended(sub, "bye")
    return
  end
  if req.method ~= "SUBSCRIBE" then
    return reply(req, 405, nil, { Allow = "SUBSCRIBE" })
  end
  local pkg, id = parse_event(req:header("Event"))
  if pkg ~= sub.event or id ~= sub.id then
    return reply(req, 489, "Bad Event", { ["Allow-Events"] = sub.event })
  end
  if sub.state == "terminated" then return reply(req, 481) end
  local asked = tonumber(req:header("Expires") or "") or DEFAULT_EXPIRES
  local e = math.min(asked, sub._granted)
  sub.expires = e
  sub._expires_at = core.now() + e
  reply(req, 200, nil, { Expires = tostring(e) })
  if e == 0 then
    -- un-SUBSCRIBE: the last NOTIFY says so (4.2.1.4)
    spawn_with(nil, function()
      send_notify(sub, "terminated", "timeout")
      ended(sub, "timeout")
    end)
    return
  end
  sub.refreshes = (sub.refreshes or 0) + 1
  rearm(sub, sub._expires_at)
  -- a refresh gets the current state (4.2.1.2)
  spawn_with(nil, send_notify, sub, sub.state)
end

--- Accept a SUBSCRIBE (the notifier): 200 with the Expires granted, then
-- at once the first NOTIFY, which carries `opts.body` when given. The
-- core then answers refreshes (each gets a NOTIFY of the current state),
-- un-SUBSCRIBE and expiry (a NOTIFY terminated;reason=timeout).
-- @tab[opt] opts `expires` (at most what was asked; default what was
-- asked), `state` (`"active"` or `"pending"`), `body`, `content_type`
-- @treturn boolean true once the first NOTIFY got its 2xx
-- @return[2] nil
-- @treturn[2] string what went wrong
function Subscription:accept(opts)
  check.self(self, SubMT, "sip.Subscription", "sub:accept")
  opts = check.opts(opts, "sub:accept", 1, { expires = "number", state = "string", body = "string",
                                             content_type = "string" })
  if opts.state and opts.state ~= "active" and opts.state ~= "pending" then
    check.arg(1, "sub:accept", "option 'state' must be \"active\" or \"pending\"")
  end
  if self.state ~= "init" then return nil, "already answered" end
  local e = math.min(opts.expires or self._asked, self._asked)
  local d, err = core.dialog(self.ua, self.request, self)
  if not d then
    reply(self.request, 500, err)
    ended(self, "failed")
    return nil, err
  end
  self._dialog = d
  self._granted = e       -- a refresh gets no more than this
  self.expires = e
  self._expires_at = core.now() + e
  self.state = opts.state or "active"
  if opts.body then
    self.body = opts.body
    self.content_type = opts.content_type or "text/plain"
  end
  reply(self.request, 200, nil, { Expires = tostring(e) })
  if e == 0 then
    -- a fetch (Expires: 0): one NOTIFY with the state, terminated
    local ok, why = send_notify(self, "terminated", "timeout")
    ended(self, "timeout")
    return ok, why
  end
  self._deadline = self._expires_at
  spawn_with(nil, clock, self, expire)
  return send_notify(self, self.state)
end

--- Refuse a SUBSCRIBE: `status` (403 by default; 489 adds Allow-Events).
-- @int[opt=403] status
-- @string[opt] reason
-- @treturn boolean true
function Subscription:reject(status, reason)
  check.self(self, SubMT, "sip.Subscription", "sub:reject")
  status = status or 403
  if type(status) ~= "number" or status < 300 or status > 699 then
    error("bad argument #1 to 'sub:reject' (status 300..699 expected)", 2)
  end
  if self.state ~= "init" then return nil, "already answered" end
  reply(self.request, status, reason, status == 489 and { ["Allow-Events"] = self.event } or nil)
  ended(self, "rejected")
  return true
end

--- Send a NOTIFY with the new state (the notifier).
-- @tab opts `body`, `content_type` (kept: refreshes send it again),
-- `state` (`"active"`, `"pending"`)
-- @treturn boolean true once it got its 2xx
-- @return[2] nil
-- @treturn[2] string `"481 ..."`, `"timeout"` (these end the
-- subscription), `"terminated"`
function Subscription:notify(opts)
  check.self(self, SubMT, "sip.Subscription", "sub:notify")
  opts = check.opts(opts, "sub:notify", 1, { body = "string", content_type = "string", state = "string" })
  if opts.state and opts.state ~= "active" and opts.state ~= "pending" then
    check.arg(1, "sub:notify", "option 'state' must be \"active\" or \"pending\"")
  end
  if self.role ~= "notifier" then
    error("bad self to 'sub:notify' (only a notifier's subscription sends NOTIFY)", 2)
  end
  if self.state == "init" then return nil, "not accepted" end
  if self.state == "terminated" then return nil, "terminated" end
  keep_body(self, opts)
  if opts.state then self.state = opts.state end
  return send_notify(self, self.state)
end

--- End the subscription from the notifier's side: a last NOTIFY with
-- Subscription-State terminated and the reason.
-- @tab[opt] opts `reason` (`"noresource"` by default; `"rejected"`,
-- `"deactivated"`, `"probation"`, `"giveup"`, `"timeout"`),
-- `retry_after` (seconds), `body`, `content_type`
-- @treturn boolean true once the NOTIFY got its 2xx
-- @return[2] nil
-- @treturn[2] string what went wrong; it is over all the same
function Subscription:terminate(opts)
  check.self(self, SubMT, "sip.Subscription", "sub:terminate")
  opts = check.opts(opts, "sub:terminate", 1, { reason = "string", retry_after = "number",
                                                body = "string", content_type = "string" })
  check.lines(opts, "sub:terminate", 1, { "reason" })
  if self.role ~= "notifier" then
    error("bad self to 'sub:terminate' (a subscriber uses sub:unsubscribe)", 2)
  end
  if self.state == "init" then return self:reject(403) end
  if self.state == "terminated" then return true end
  keep_body(self, opts)
  self.reason = opts.reason or "noresource"
  local ok, why = send_notify(self, "terminated", self.reason, opts.retry_after)
  ended(self, self.reason)
  return ok, why
end

-- what a SUBSCRIBE handler's end means
local function handler_done(sub, ok, a, b)
  if not ok then
    log("error", "SUBSCRIBE handler failed: " .. tostring(a))
    if sub.state == "init" then
      reply(sub.request, 500)
      ended(sub, "failed")
    end
    return
  end
  if sub.state == "init" then
    if type(a) == "number" and a >= 300 then
      sub:reject(a, b)
    else
      -- neither accepted nor refused: say no rather than leave it open
      sub:reject(403)
    end
  end
end

-- A new SUBSCRIBE for ua's handler (from init.lua's dispatch).
function M.incoming(ua, req, fn)
  local pkg, id = parse_event(req:header("Event"))
  if not pkg then
    return reply(req, 400, "Missing Event header")
  end
  local n = live[ua] or 0
  if n >= (limits[ua] or 10000) then
    log("warn", "subscription limit reached (" .. n .. "): 503")
    return reply(req, 503, nil, { ["Retry-After"] = "5" })
  end
  live[ua] = n + 1
  local asked = tonumber(req:header("Expires") or "") or DEFAULT_EXPIRES
  local sub = setmetatable({
    role = "notifier", ua = ua, request = req, event = pkg, id = id, state = "init",
    call_id = req.call_id, _asked = asked, expires = asked,
  }, SubMT)
  spawn_task(handler_done, sub, fn, sub)
end

-- The events of a subscription's dialog (from init.lua's dispatch).
function M.event(sub, name, msg)
  if name == "closed" then
    ended(sub, "closed")
  elseif name == "request" and msg then
    if sub.state == "terminated" then return reply(msg, 481) end
    if sub.role == "subscriber" then subscriber_request(sub, msg) else notifier_request(sub, msg) end
  end
end

-- sip.ua's max_subscriptions for this UA
function M.set_limit(ua, n)
  limits[ua] = n
end

return M
