--- luasip: SIP user agents for Lua, one event loop, one coroutine per call flow.
--
-- `local sip = require "sip"` gives the functions below and four classes:
-- `UA` (a user agent, made by `sip.ua`), `Message` (requests and
-- responses), `Call` (an INVITE dialog) and `Registration`; `sip.sdp`
-- builds and reads SDP. The longer reference, with the tables of options,
-- states and defaults, is in the docs/ folder of the source tree:
-- docs/ua.md, docs/calls.md, docs/sdp.md, docs/auth.md,
-- docs/registration.md, docs/tls.md.
--
-- **The coroutine rule.** Every operation that waits on the network or on
-- time yields the calling coroutine; the C core (`sip.core`) wakes it once
-- with the outcome. Such calls must run in a coroutine luasip drives: a
-- request handler, a call hook, `sip.spawn`, `sip.run`, or a chunk that
-- `bin/luasip` runs; anywhere else they raise an error that names
-- `sip.run`. A pending wait keeps `sip.run` (and the runner) going.
--
-- **Errors.** A programmer's mistake raises an error naming the public
-- function and argument, at the caller's line: a wrong argument type, an
-- unknown option or an option of the wrong type
-- (`bad argument #3 to 'ua:request' (unknown option 'bdy')`), a
-- malformed URI, CR or LF in a header value. A network outcome returns fail: `nil, err`, `err` a short
-- string (`"timeout"`, `"closed"`, `"transport: connection refused"`,
-- `"486 Busy Here"`, then the response as a third value).
-- @module sip
-- @pragma nostrip

local core = require "sip.core"

local error, type, tostring, pairs = error, type, tostring, pairs

local sip = { _VERSION = "luasip 0.1", core = core }

local worker_id, worker_count = tonumber(os.getenv("LUASIP_WORKER")), tonumber(os.getenv("LUASIP_WORKERS"))
--- Under `luasip -w N`, this worker: `{ id = 1..N, count = N }`; nil in
-- a process of its own.
sip.worker = worker_id and worker_count and { id = worker_id, count = worker_count } or nil

local sched = require "sip.sched"
local log, queue, flush, wake, wake_now, cancel_wait = sched.log, sched.queue, sched.flush,
  sched.wake, sched.wake_now, sched.cancel_wait
local current, wait, spawn_with, spawn_owned, spawn_task =
  sched.current, sched.wait, sched.spawn_with, sched.spawn_owned, sched.spawn_task
sip._logf, sip._current, sip._wait, sip._spawn_with = log, current, wait, spawn_with

local failed = nil   -- first error of a main coroutine, re-raised by sip.run
local log_levels = { error = true, warn = true, info = true, debug = true }

--- Start fn(...) in a new coroutine driven by luasip; it runs at once until
-- its first wait. Errors are logged with their traceback.
-- @func fn the function to run
-- @param ... its arguments
-- @treturn thread the coroutine
function sip.spawn(fn, ...)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'spawn' (function expected, got " .. type(fn) .. ")", 2)
  end
  return sched.spawn(fn, ...)
end

--- Wait `seconds` (a coroutine-friendly sleep), letting everything else run.
-- @number seconds not negative
-- @treturn boolean true
function sip.sleep(seconds)
  if type(seconds) ~= "number" or seconds < 0 then
    error("bad argument #1 to 'sleep' (non-negative number expected)", 2)
  end
  local co = current("sip.sleep")
  local _ <close> = core.timer(seconds, co)
  -- true from the timer; nil, "hangup" / "cancelled" when ended early
  local ok, why = wait()
  if ok then return true end
  return nil, why
end

local function first_exit(state, i, ok, ...)
  if state.done then
    if not ok then log("error", "a sip.first branch failed after another won: " .. tostring(...)) end
    return
  end
  state.done = true
  if ok then
    state.result = table.pack(i, ...)
  else
    state.failed = ...
  end
  -- the others end their pending wait with nil, "cancelled"
  for j, b in ipairs(state.branches) do
    if j ~= i then cancel_wait(b, "cancelled") end
  end
  if state.parked then
    state.parked = false
    wake_now(state.co)
  end
end

--- Wait on several things at once: run each function in a coroutine of
-- its own and return the index and results of the first to return. The
-- others are cancelled: their pending wait returns nil, "cancelled" (a
-- request is abandoned, an INVITE CANCELled, a play stopped) and they run
-- to their end. A branch that raises first raises here.
-- @func ... the branches
-- @return the index of the first branch to return, then its results
-- @return[2] nil, "hangup" when the call this coroutine belongs to ended
function sip.first(...)
  local n = select("#", ...)
  if n == 0 then error("bad argument #1 to 'sip.first' (function expected, got no value)", 2) end
  for i = 1, n do
    local f = select(i, ...)
    if type(f) ~= "function" then
      error("bad argument #" .. i .. " to 'sip.first' (function expected, got " .. type(f) .. ")", 2)
    end
  end
  local co = current("sip.first")
  local state = { co = co, branches = {}, done = false, parked = false }
  local owner = sched.owner_of(co)
  for i = 1, n do
    local f = select(i, ...)
    state.branches[i] = spawn_owned(function(ok, ...) return first_exit(state, i, ok, ...) end,
                                    owner, f)
    if state.done then break end
  end
  if not state.done then
    state.parked = true
    local a, why = wait(function(c, reason)
      -- this coroutine's own wait ended early (its call hung up): the
      -- branches end too
      state.parked, state.cancelled = false, reason
      for _, b in ipairs(state.branches) do cancel_wait(b, reason) end
      wake_now(c, nil, reason)
    end)
    if state.cancelled or not state.done then
      state.parked = false
      return a, why
    end
  end
  if state.failed then error(state.failed, 0) end
  return table.unpack(state.result, 1, state.result.n)
end

--- Run main(...) in a coroutine, then the loop until sip.stop() or until
-- nothing is left to wait for (no coroutine waiting on a timer or a
-- request, no user agent serving handlers). An error in main stops the
-- loop and is raised again here, with main's traceback.
-- Then the requests still owed a message (the ACK of a 487 to our CANCEL,
-- a BYE's retransmissions) get up to 2 s to finish. Use it from plain
-- `lua5.4`; `bin/luasip` does it for you.
-- @func[opt] main the first coroutine
-- @param ... its arguments
-- @treturn boolean true
function sip.run(main, ...)
  failed = nil
  if main ~= nil then
    if type(main) ~= "function" then
      error("bad argument #1 to 'run' (function expected, got " .. type(main) .. ")", 2)
    end
    spawn_with(function(ok, tb)
      if not ok then
        failed = tb
        core.stop()
      end
    end, main, ...)
  end
  if not failed then
    core.run()
    -- what still needs one more message from us (the ACK of a 487 to
    -- our CANCEL, a BYE's retransmissions) gets a bounded time to finish
    if not failed then core.linger(2) end
  end
  if failed then
    local err = failed
    failed = nil
    error(err, 0)
  end
  return true
end

--- Stop sip.run at the end of the current loop iteration.
function sip.stop()
  core.stop()
end

--- The loop's clock, in seconds (for time differences).
-- @function sip.now
-- @treturn number
sip.now = core.now

--- Set the log level ("error", "warn", "info", "debug") and optionally a
-- function(level, message) that receives every log line.
-- Every dropped message is logged with its reason at some level.
-- @string[opt] level the new level (default `"warn"`)
-- @param[opt] fn a `function(level, text)` that gets every log line
-- instead of stderr; `false` restores stderr
-- @treturn string the current level
function sip.log(level, fn)
  if level ~= nil and not log_levels[level] then
    error("bad argument #1 to 'log' (level must be error, warn, info or debug)", 2)
  end
  if fn ~= nil and type(fn) ~= "function" and fn ~= false then
    error("bad argument #2 to 'log' (function expected)", 2)
  end
  if fn == nil then return core.log(level) end
  sip._log_fn = fn or nil
  sched.log_sink = sip._log_fn
  return core.log(level, fn)
end

local function short(text)
  local first = text:match("^[^\r\n]*") or ""
  local cid = text:match("\n[Cc][Aa][Ll][Ll]%-[Ii][Dd]%s*:%s*([^\r\n]*)") or
              text:match("\n[Ii]%s*:%s*([^\r\n]*)") or "?"
  local cseq = text:match("\n[Cc][Ss][Ee][Qq]%s*:%s*([^\r\n]*)") or ""
  if first:match("^SIP/2%.0") then
    return first:gsub("^SIP/2%.0%s+", "") .. "  (" .. cseq .. ")  call-id " .. cid
  end
  return first:gsub("%s+SIP/2%.0$", "") .. "  call-id " .. cid
end
sip._short = short

local sip_trace = require("sip.trace").bind(sip)
-- scripted peers and a loop driver for specs (sip.test.peer, sip.test.run)
sip.test = require "sip.test"
-- a call flow as a load test (sip.load{ rate =, limit =, run = fn })
sip.load = require "sip.load"

--- Print every SIP message sent and received: sip.trace(true) one line
-- each, sip.trace("full") the whole text, sip.trace("path/file") appends
-- one line each to a file, sip.trace(false) stops. A function receives
-- (direction, transport, peer, text, local), the addresses as "ip:port".
-- A table combines: { pcap = "calls.pcap" } writes every message to a
-- pcap file (Wireshark, tshark, sngrep: UDP as UDP, TCP and TLS as TCP
-- segments, TLS in plaintext), { ladder = true } prints a ladder diagram,
-- { print = any of the forms above }. Each call replaces the previous
-- setting and closes its files.
function sip.trace(how)
  sip_trace.set("script", how, "sip.trace")
end

--- Print a message's full text.
-- @tparam Message msg
function sip.show(msg)
  print(msg:raw())
end

---------------------------------------------------------------------------
-- User agents

local state = require "sip.state"
local class = require "sip.class"
-- the C methods; the Lua ones join them through class.interpose
local UA = class.methods(core.UA)
local handlers, proxies, ua_auth, event_queues =
  state.handlers, state.proxies, state.auth, state.event_queues
local sip_auth = require "sip.auth"
sip._handlers = handlers

local check = require "sip.check"
local sip_resolve = require "sip.resolve"
local subscriptions = require "sip.subscription"  -- ua:subscribe, sip.Subscription
sip.publications = require("sip.publish").publications  -- and ua:publish

local ua_options = {
  listen = "string|table", proxy = "string", user_agent = "string", t1 = "number",
  t2 = "number", t4 = "number", max_udp = "number", max_message = "number",
  idle_timeout = "number", max_connections = "number", max_server_transactions = "number",
  auth = "table|function", tls = "table", header_timeout = "number",
  max_connections_per_ip = "number", max_headers = "number", max_header_line = "number",
  contact = "string", media = "table", dns = "table", keepalive = "number",
  max_subscriptions = "number", session_timer = "table",
}
local TLS_OPTIONS = {
  cert = "string", key = "string", cafile = "string", capath = "string", verify = "boolean",
  verify_client = "boolean", allow_wildcard = "boolean", tls13 = "boolean",
  handshake_timeout = "number",
}
local MEDIA_OPTIONS = { addr = "string", ports = "string", codecs = "table" }
local ua_media, ua_contacts, ua_keepalive = state.media, state.contacts, state.keepalive

--- Create a user agent: its listening sockets, handlers and client
-- requests. Requests over TCP and TLS open a connection on demand (no
-- listener of that transport is needed to send) and reuse it. Options
-- (docs/ua.md has them all, with their defaults):
--
-- - `listen`: a string or a list of `"udp:HOST:PORT"`, `"tcp:HOST:PORT"`,
--   `"tls:HOST:PORT"` (default `"udp:127.0.0.1:0"`); IPv6 as
--   `"udp:[::1]:5060"`; port 0 picks a free port; a host name is looked up
--   once, here (`"udp:localhost:0"`). A `tls:` listener needs `tls.cert`.
-- - `proxy`: an outbound proxy URI for every request.
-- - `auth`: digest credentials for every request (see `sip.auth`).
-- - `tls`: `cert` (a PEM file, which may also hold the key), `key`,
--   `cafile`, `capath`, `verify`, `verify_client`, `tls13`,
--   `allow_wildcard`, `handshake_timeout` (docs/tls.md).
-- - `contact`: our Contact (a SIP URI or name-addr) in every request and
--   answer that carries one, instead of the listener's address (NAT).
-- - `media`: `{ addr =, ports = "16384-32767", codecs = { "PCMU", ... } }`:
--   every call answered or placed without an SDP of the script's gets an
--   RTP session (`call.media`), and `call:play`, `call:record` and
--   `call:tone` work (examples/ivr.lua).
-- - `dns`: `{ servers = { "127.0.0.1:5353" }, timeout = 5, blacklist = 30 }`:
--   requests to a host name are located by RFC 3263 (NAPTR, SRV, A/AAAA)
--   on the loop, with these servers (default: the system's); a target that
--   fails (transport error, timeout, 503) passes the request to the next
--   one and goes last for `blacklist` seconds (see `sip.resolve`).
-- - `keepalive`: seconds; the flows this UA opens stay open through NATs
--   and firewalls with CRLF keep-alives (RFC 5626 4.4.1): a TCP or TLS
--   connection it opened sends a ping after that much silence instead of
--   closing when idle (a peer that answered pings and stops is taken for
--   dead after 10 s: the connection closes), and each registration over
--   UDP pings its registrar that often (see `ua:register`).
-- - `user_agent`: the User-Agent and Server header (`"luasip/0.1"`).
-- - `t1`, `t2`, `t4`: the RFC 3261 timers in seconds (0.5, 4, 5).
-- - limits: `max_udp`, `max_message`, `idle_timeout`, `header_timeout`,
--   `max_headers`, `max_header_line`, `max_connections`,
--   `max_connections_per_ip`, `max_server_transactions`,
--   `max_subscriptions` (subscriptions to us at once; past it a
--   SUBSCRIBE gets 503, default 10000).
-- - `session_timer`: `{ expires =, min_se = }` (RFC 4028): our INVITEs
--   ask for sessions refreshed every `expires` seconds (none without
--   it; `ua:invite{ session_expires = }` per call); incoming ones shorter
--   than `min_se` (90 by default, as RFC 4028 asks; less only for tests)
--   get 422. A session timer an INVITE asks for is always honoured.
-- @tab[opt] opts the options above
-- @treturn UA the user agent
-- @return[2] nil
-- @treturn[2] string why:
-- `"listen udp:127.0.0.1:5060: Address already in use"`,
-- `"tls: cannot load the certificate: ..."`
function sip.ua(opts)
  opts = check.opts(opts, "sip.ua", 1, ua_options)
  check.lines(opts, "sip.ua", 1, { "contact", "user_agent", "proxy" })
  if opts.contact and not opts.contact:find("^%s*<?sips?:") and not opts.contact:find("<sips?:") then
    check.arg(1, "sip.ua", "option 'contact' must be a SIP URI or name-addr")
  end
  local auth = sip_auth.check_creds(opts.auth, "sip.ua")
  if opts.keepalive and opts.keepalive < 0 then
    check.arg(1, "sip.ua", "option 'keepalive' must not be negative")
  end
  if opts.dns then sip_resolve.check(opts.dns, "sip.ua", 1) end
  if opts.tls then
    check.opts(opts.tls, "sip.ua", 1, TLS_OPTIONS)
    if opts.tls.key and not opts.tls.cert then
      check.arg(1, "sip.ua", "option 'tls.key' needs 'tls.cert'")
    end
  end
  if opts.session_timer then
    local st = check.opts(opts.session_timer, "sip.ua", 1, { expires = "number", min_se = "number" })
    if (st.expires and st.expires < 0) or (st.min_se and st.min_se < 0) then
      check.arg(1, "sip.ua", "option 'session_timer' must have non-negative expires and min_se")
    end
  end
  local media = opts.media and check.opts(opts.media, "sip.ua", 1, MEDIA_OPTIONS)
  if media then
    if media.ports and not media.ports:match("^%d+%-%d+$") then
      check.arg(1, "sip.ua", "option 'media.ports' must be \"low-high\"")
    end
    for i, c in ipairs(media.codecs or {}) do
      if type(c) ~= "string" or not sip.sdp.codecs[c] then
        check.arg(1, "sip.ua", "media.codecs[" .. i .. "] is not a known codec (" .. tostring(c) .. ")")
      end
    end
  end
  local ua, err = core.UA.new(opts)
  if not ua then return nil, err end
  handlers[ua] = {}
  proxies[ua] = opts.proxy
  ua_media[ua] = media
  ua_contacts[ua] = opts.contact
  ua_keepalive[ua] = opts.keepalive
  ua_auth[ua] = auth
  if opts.max_subscriptions then subscriptions.set_limit(ua, opts.max_subscriptions) end
  state.session_timer[ua] = opts.session_timer
  return ua
end

local function check_method(method, fname)
  if type(method) ~= "string" or not method:match("^[%w%-%.!%%%*_%+`'~]+$") then
    error("bad argument #1 to '" .. fname .. "' (method name expected)", 3)
  end
  return method:upper()
end

-- self must be an open sip.UA (a closed one has no handler table)
local check_ua = state.check_ua
sip._check_ua = check_ua

--- A user agent (`sip.UA`), made by `sip.ua`: it serves requests with
-- handlers (`ua:on`) or in a loop (`ua:events`), sends requests
-- (`ua:request`), places calls (`ua:invite`) and keeps registrations
-- (`ua:register`). A UA with a handler keeps `sip.run` (and the runner)
-- alive until it is closed.
--
-- Requests nobody serves are answered by the core: OPTIONS 200 with
-- Allow and `Accept: application/sdp`, a BYE that matches no call 481,
-- another known method 405 with Allow, an unknown one 501.
-- `local ua <close> = sip.ua{...}` closes it at the end of the scope.
-- @type UA

--- Serve requests of `method` ("*" for any): fn(req) runs in a new
-- coroutine for each; returning a status (with reason and opts) replies.
-- The coroutines are pooled, so a handler may block (send requests of its
-- own, sleep). A handler that raises is logged with its traceback and its
-- request gets 500 if nothing was sent yet. An INVITE handler gets a
-- `Call`, not a request; a SUBSCRIBE handler a `Subscription` (accept it
-- with `sub:accept`, or return a status to refuse it).
-- @string method a method name, or `"*"`
-- @func fn `fn(req)`, or `fn(call)` for INVITE
-- @treturn UA the UA
function UA:on(method, fn)
  check_ua(self, "ua:on")
  method = check_method(method, "ua:on")
  if type(fn) ~= "function" then
    error("bad argument #2 to 'ua:on' (function expected, got " .. type(fn) .. ")", 2)
  end
  handlers[self][method] = fn
  self:_serve(method)
  return self
end

--- Pull-style serving, like `eXosip_event_wait`, for scripts that want one
-- loop. The loop is `for ev in ua:events() do ... end`.
-- Each incoming request that
-- no handler of its own serves becomes an event: { type = "call_invite",
-- call = call } for an INVITE, { type = "request", method =, request =
-- req } otherwise (answer it with req:reply). The loop ends when the UA
-- closes, or after `timeout` seconds without an event. The queue belongs
-- to the UA, not to one loop: a later `ua:events()` loop (after a break
-- or a timeout) sees what arrived in between and everything after.
-- @number[opt] timeout seconds without an event that end the loop
-- @treturn function an iterator of events
function UA:events(timeout)
  check_ua(self, "ua:events")
  if timeout ~= nil and (type(timeout) ~= "number" or timeout <= 0) then
    error("bad argument #1 to 'ua:events' (positive number expected)", 2)
  end
  local evq = event_queues[self]
  if not evq then
    -- installed once per UA: the handlers push into the UA's queue
    evq = { head = 1, tail = 0, waiters = {} }
    event_queues[self] = evq
    local function push(ev)
      evq.tail = evq.tail + 1
      evq[evq.tail] = ev
      -- the first loop waiting gets it
      local co = next(evq.waiters)
      if co then
        evq.waiters[co] = nil
        wake_now(co, true)
      end
      -- the event's receiver answers it: the handler's coroutine ends here
    end
    local hs = handlers[self]
    for _, m in ipairs{ "*", "INVITE" } do
      if not hs[m] then
        hs[m] = m == "INVITE"
          and function(call) push{ type = "call_invite", call = call }; return call:wait() end
          or function(req) push{ type = "request", method = req.method, request = req } end
        self:_serve(m)
      end
    end
  end
  local ua = self
  return function()
    while evq.head > evq.tail do
      if not handlers[ua] then return nil end          -- closed
      local co = current("ua:events")
      evq.waiters[co] = true
      local _ <close> = timeout and core.timer(timeout, co) or nil
      wait()
      evq.waiters[co] = nil
      if evq.head > evq.tail then return nil end       -- timed out, or closed
    end
    local ev = evq[evq.head]
    evq[evq.head] = nil
    evq.head = evq.head + 1
    return ev
  end
end

--- The SIP URI of this UA's first (or idx-th) listener, with an optional user.
-- E.g. `"sip:bob@127.0.0.1:5060"`, with `;transport=tcp` or
-- `;transport=tls` for a TCP or TLS listener.
-- @string[opt] user the user part
-- @int[opt=1] idx which listener
-- @treturn ?string the URI; nil without such a listener
function UA:uri(user, idx)
  local addr = self:address(idx)
  if not addr then return nil end
  local proto, hostport = addr:match("^(%a+):(.*)$")
  local u = "sip:" .. (user and (user .. "@") or "") .. hostport
  if proto ~= "udp" then u = u .. ";transport=" .. proto end
  return u
end

local request_options = {
  headers = "table", body = "string", content_type = "string", timeout = "number",
  proxy = "string", from = "string", to = "string", call_id = "string", cseq = "integer",
  on_provisional = "function", auth = "table|function", contact = "string",
  auth_state = "table",   -- private: a registration's digest state across refreshes
}

--- Send a request and wait for its final response.
-- Provisional responses do not end the wait. A 401 or 407 is answered
-- with the credentials (`opts.auth`, else the UA's) and the request sent
-- again. Over UDP the request is retransmitted (Timer E) until a response
-- arrives. INVITE, ACK and CANCEL raise: calls have `ua:invite`. Options:
--
-- - `headers`: extra headers,
--   `{ ["X-A"] = "1", Route = { "<sip:p1;lr>", "<sip:p2;lr>" } }`
--   (a list repeats the header); a Contact given here replaces ours
-- - `body`, `content_type` (`"text/plain"` when a body has none)
-- - `timeout`: seconds to wait for the final response; without it the
--   transaction's Timer F (64·T1, 32 s) ends the wait
-- - `proxy`, `auth`: instead of the UA's
-- - `from`, `to`, `call_id`, `cseq`: instead of the defaults
-- - `contact`: our Contact for this request
-- - `on_provisional`: `function(res)` for each 1xx, in a coroutine of its own
-- @string method e.g. `"OPTIONS"`, `"MESSAGE"`
-- @string uri the Request-URI
-- @tab[opt] opts the options above
-- @treturn Message the final response, whatever its status (a 404 is a
-- result, not a failure)
-- @return[2] nil
-- @treturn[2] string `"timeout"`, `"closed"` (the UA was closed),
-- `"transport: ..."`, `"tls: ..."`
function UA:request(method, uri, opts)
  check_ua(self, "ua:request")
  method = check_method(method, "ua:request")
  if method == "INVITE" or method == "ACK" or method == "CANCEL" then
    error("bad argument #1 to 'ua:request' (" .. method .. " belongs to calls: use ua:invite)", 2)
  end
  if type(uri) ~= "string" then
    error("bad argument #2 to 'ua:request' (SIP URI string expected, got " .. type(uri) .. ")", 2)
  end
  if uri:find("[%s]") then
    error("bad argument #2 to 'ua:request' (URI contains spaces or line breaks)", 2)
  end
  opts = check.opts(opts, "ua:request", 3, request_options)
  check.lines(opts, "ua:request", 3, { "contact", "from", "to", "call_id", "proxy", "content_type" })
  local co = current("ua:request")
  local proxy = opts.proxy or proxies[self]
  local creds = sip_auth.check_creds(opts.auth, "ua:request") or ua_auth[self]
  -- opts.auth_state: a state kept by the caller across requests (a
  -- registration's refreshes reuse its nonce with a growing nc)
  local auth_state = opts.auth_state or (creds and sip_auth.new_state(creds))
  local pre = auth_state and sip_auth.preempt(auth_state, method, uri, opts.body)
  if pre then opts = sip_auth.retry_opts(opts, pre, nil) end
  while true do
    local ok, err = self:_request(method, uri, opts, co, proxy)
    if not ok then
      if err:find("^bad URI") then error("bad argument #2 to 'ua:request' (" .. err .. ")", 2) end
      return nil, err
    end
    local res, why = wait()
    if not res then return nil, why end
    local st = res.status
    -- 401/407: answer the challenge once per nonce (22.2, 22.3)
    local extra = (st == 401 or st == 407) and
                  sip_auth.answer(auth_state, res, method, uri, opts.body)
    if not extra then return res end
    opts = sip_auth.retry_opts(opts, extra, res)
  end
end



-- a handler's coroutine ended: a returned status replies, a raise gets 500
local function handler_exit(req, ok, a, b, c)
  if not ok then
    log("error", "handler for " .. tostring(req.method) .. " failed: " .. a)
    req:reply(500)
    return
  end
  if type(a) == "number" then
    local done, err = req:reply(a, b, c)
    if not done and err ~= "already answered" then
      log("warn", "reply " .. a .. " to " .. tostring(req.method) .. ": " .. tostring(err))
    end
  end
end


--- A SIP request or response (`sip.Message`). Its fields are read-only
-- properties (assigning one raises: use `set_header`). `tostring(msg)` is
-- a one-line summary. A received request that is never answered gets a
-- 500 when the message is closed or collected; until then the peer waits.
--
-- Fields:
--
-- - `is_request`: true for a request
-- - `method`: the request method (for a response, the method of its CSeq)
-- - `uri`: the Request-URI (requests)
-- - `status`: the status code (responses)
-- - `reason`: the reason phrase (responses)
-- - `body`: the body (`""` when none)
-- - `content_type`: the Content-Type value
-- - `from`: the whole From header value
-- - `to`: the whole To header value
-- - `from_uri`: the From URI
-- - `to_uri`: the To URI
-- - `from_tag`: the From tag
-- - `to_tag`: the To tag
-- - `call_id`: the Call-ID
-- - `cseq`: the CSeq number
-- - `cseq_method`: the CSeq method
-- - `contact`: the first Contact value
-- - `via`: the top Via value
-- - `source`: `"host:port"` the message came from (received messages)
-- - `transport`: `"UDP"`, `"TCP"` or `"TLS"` (received messages)
-- - `tls`: for a message received over TLS,
--   `{ peer_subject =, verified = }`: the subject of the peer's
--   certificate (nil when it sent none) and whether it was verified
-- @type Message

--- Answer a request with a digest challenge unless its credentials are
-- good: returns the user name, or nil after sending 401 (407 with
-- proxy=true). opts: realm, credentials (table user -> password, or
-- function(user, realm) -> password | { ha1 = }), proxy, algorithms, expires.
-- Nonces are stateless (an HMAC under a secret drawn per process), expire
-- and cannot be replayed; an unknown user is challenged exactly like a
-- wrong password. docs/auth.md has the details.
-- @function authenticate
-- @tab opts `realm` (required); `credentials`: a table user -> password
-- string, `{ password = }`, `{ ha1 = }` (MD5), `{ ha1_sha256 = }` or
-- `{ ha1_sha512_256 = }`, or a `function(user, realm)` returning one of
-- those or nil (it may block); `proxy` (true: Proxy-Authorization and
-- 407); `algorithms` (default `{ "MD5" }`); `expires` (nonce lifetime,
-- default 300 s)
-- @treturn ?string the user name; nil once the challenge was sent
class.interpose(core.Message, "authenticate", function(req, opts)
  return sip_auth.authenticate(req, opts)
end)
sip.sdp = require "sip.sdp"
local calls = require "sip.call"              -- ua:invite and the sip.Call methods
local registrations = require "sip.register"  -- ua:register
require "sip.refer"                           -- call:refer, call:on("refer"), Replaces
require "sip.session"                         -- call:update
local bridge = require "sip.bridge"
sip.bridge, sip.b2bua = bridge.bridge, bridge.b2bua
sip_resolve.install(sip)

local close_c = UA.close
--- @type UA

--- Close the UA: registrations are removed (when called from a luasip
-- coroutine), open calls get BYE, pending requests fail with "closed".
-- Also `local ua <close> = sip.ua{...}`.
-- Outside a luasip coroutine registrations just stop being refreshed.
-- Listeners and connections close, transactions end, `ua:events()` loops
-- end, calls still up end `"closed"`. Idempotent. The UA's `__gc` closes
-- its sockets too, but neither removes registrations nor wakes anyone.
function UA:close()
  check.self(self, core.UA, "sip.UA", "ua:close")
  registrations.close_all(self)
  handlers[self] = nil
  -- loops waiting in ua:events() end
  local evq = event_queues[self]
  event_queues[self] = nil
  if evq then
    for co in pairs(evq.waiters) do
      evq.waiters[co] = nil
      wake_now(co)
    end
  end
  return close_c(self)
end
core.UA.__close = UA.close


local CallMT = core.Call
local SubMT, UAMT = subscriptions.Subscription, core.UA

-- Called from the queue for each new request a handler serves.
local function dispatch_now(ua, req)
  local hs = handlers[ua]
  if getmetatable(req) == CallMT then
    local fn = hs and (hs.INVITE or hs["*"])
    if fn then
      calls.incoming_call(ua, req, fn)
    else
      req:_reply(405)
      req:_end()
    end
    return
  end
  if req.method == "SUBSCRIBE" and hs and hs.SUBSCRIBE then
    subscriptions.incoming(ua, req, hs.SUBSCRIBE)
    return
  end
  local fn = hs and (hs[req.method] or hs["*"])
  if not fn then
    req:reply(500, "No Handler")
    return
  end
  spawn_task(handler_exit, req, fn, req)
end

-- dispatch(ua, req) for requests; dispatch(fn, msg) for callbacks such as
-- on_provisional, which then run in a coroutine of their own
-- and dispatch(call, event, msg) for events of a call
local function dispatch(a, b, c)
  if type(a) == "function" then
    if c ~= nil then
      -- fn(b, c) as is, from the queue (a digit to a call's buffer)
      queue(a, b, c)
      return
    end
    queue(spawn_with, function(ok, tb)
      if not ok then log("error", "callback failed: " .. tb) end
    end, a, b)
  elseif c ~= nil or type(b) == "string" then
    -- an event of a call, of a subscription, or a NOTIFY for none (the UA's)
    local mt = getmetatable(a)
    queue(mt == SubMT and subscriptions.event or mt == UAMT and subscriptions.orphan or calls.call_event,
          a, b == "orphan" and c or b, c)
  else
    queue(dispatch_now, a, b)
  end
end

core.set_hooks(wake, dispatch, flush)

return sip
