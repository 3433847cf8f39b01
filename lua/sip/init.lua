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

local coroutine, debug, error, type, tostring, pairs, setmetatable =
      coroutine, debug, error, type, tostring, pairs, setmetatable
local co_create, co_resume, co_running, co_status, co_yield =
      coroutine.create, coroutine.resume, coroutine.running, coroutine.status, coroutine.yield

local sip = { _VERSION = "luasip 0.1", core = core }

local worker_id, worker_count = tonumber(os.getenv("LUASIP_WORKER")), tonumber(os.getenv("LUASIP_WORKERS"))
--- Under `luasip -w N`, this worker: `{ id = 1..N, count = N }`; nil in
-- a process of its own.
sip.worker = worker_id and worker_count and { id = worker_id, count = worker_count } or nil

-- The private sentinel every library wait yields: a user's own yield
-- inside a driven coroutine can never be mistaken for one of ours.
local WAIT = setmetatable({}, { __name = "sip.wait" })

local driven = setmetatable({}, { __mode = "k" })   -- coroutine -> on_exit or true
-- coroutine -> true while parked. Strong: a parked coroutine is kept
-- until its one wake, and while any is parked the loop is held alive
-- (core.hold), whatever timers run: an INVITE that got a 1xx has no
-- timer left, yet its 2xx must still be ACKed (RFC 3261 17.1.1.2).
-- The value is the wait's number: a wake queued by the C core carries
-- the number it was queued for, so a wake that arrives after its wait
-- ended another way (a cancel, a hangup) cannot end a later wait.
local waiting = {}
local n_waiting = 0
local wait_seq = 0
-- co -> how to end its current wait early (sip.first, a call's hangup);
-- CANCELLING once that was asked and the wait's own waker will wake it
local cancelers = {}
local CANCELLING = function() end
-- coroutine -> the call it belongs to (its handler, hooks, and what they
-- spawned): when the call ends, their pending waits return nil, "hangup"
local owners = setmetatable({}, { __mode = "k" })
local core_hold = core.hold
local task_ctx = setmetatable({}, { __mode = "k" }) -- pooled coroutine -> its task's context

-- Request handlers run in pooled coroutines: one that finished its task
-- yields DONE and waits in the pool for the next, so a call costs no new
-- thread, stack and call-info list. A task that fails kills its coroutine
-- (it is not pooled again).
local DONE = setmetatable({}, { __name = "sip.done" })
local pool, pool_n, POOL_MAX = {}, 0, 64

local log_levels = { error = 1, warn = 2, info = 3, debug = 4 }

local function log(level, msg)
  -- below the level set by sip.log: nothing (rare lines: one query each)
  if log_levels[level] > log_levels[core.log()] then return end
  -- core.log routes through the same sink as the C core's log lines
  local sink = sip._log_fn
  if sink then
    sink(level, msg)
  else
    io.stderr:write("luasip ", level, ": ", msg, "\n")
  end
end
sip._logf = log

local failed = nil   -- first error of a main coroutine, re-raised by sip.run

local resume

-- on_exit(ok, ...), or on_exit(ctx, ok, ...) for a pooled task
local function exit_with(co, on_exit, ok, ...)
  local ctx = task_ctx[co]
  if ctx ~= nil then
    task_ctx[co] = nil
    return on_exit(ctx, ok, ...)
  end
  return on_exit(ok, ...)
end

local function finish(co, ok, ...)
  local on_exit = driven[co]
  if not ok then
    local err = ...
    local tb = debug.traceback(co, tostring(err))
    driven[co] = nil
    if type(on_exit) == "function" then
      exit_with(co, on_exit, false, tb, err)
    else
      task_ctx[co] = nil
      log("error", "coroutine failed: " .. tb)
    end
    return
  end
  local first = ...
  if first == WAIT then
    if not waiting[co] then
      wait_seq = wait_seq + 1
      waiting[co] = wait_seq
      n_waiting = n_waiting + 1
      if n_waiting == 1 then core_hold(true) end
    end
    return
  end
  if first == DONE then
    -- a pooled task returned: its coroutine serves the next one
    driven[co] = nil
    owners[co] = nil
    if pool_n < POOL_MAX then
      pool_n = pool_n + 1
      pool[pool_n] = co
    end
    if type(on_exit) == "function" then return exit_with(co, on_exit, true, select(2, ...)) end
    task_ctx[co] = nil
    return
  end
  if co_status(co) == "dead" then
    driven[co] = nil
    if type(on_exit) == "function" then on_exit(true, ...) end
    return
  end
  do
    -- a bare coroutine.yield() in a driven coroutine: nothing will
    -- ever resume it, so say so instead of hanging silently
    log("warn", "a luasip coroutine yielded a value of its own; it will not be resumed")
  end
end

resume = function(co, ...)
  return finish(co, co_resume(co, ...))
end

-- The C core queues work here (wake, dispatch) and calls flush() once
-- its callbacks have returned, so Lua code never runs inside them.
-- Five slots per item (function and up to four arguments) in one flat
-- array: no table per queued item on this per-message path.
local runq, runq_n = {}, 0

local function queue(f, a, b, c, d, e)
  local n = runq_n
  runq[n + 1], runq[n + 2], runq[n + 3], runq[n + 4], runq[n + 5], runq[n + 6] = f, a, b, c, d, e
  runq_n = n + 6
end

local qhead = 1

local function run_queue()
  while qhead <= runq_n do
    local i = qhead
    local f, a, b, c, d, e = runq[i], runq[i + 1], runq[i + 2], runq[i + 3], runq[i + 4], runq[i + 5]
    runq[i], runq[i + 1], runq[i + 2], runq[i + 3], runq[i + 4], runq[i + 5] =
      nil, nil, nil, nil, nil, nil
    qhead = i + 6
    f(a, b, c, d, e)
  end
  qhead, runq_n = 1, 0
end

-- an error in one item is logged and the rest still run: the queue is
-- never left half-consumed
local function flush()
  while true do
    local ok, err = pcall(run_queue)
    if ok then return end
    log("error", "callback failed: " .. tostring(err))
  end
end

-- the outcome of a wait: exactly one resume per wait
local function wake_now(co, ...)
  if not waiting[co] then return end
  waiting[co] = nil
  cancelers[co] = nil
  n_waiting = n_waiting - 1
  if n_waiting == 0 then core_hold(false) end
  return resume(co, ...)
end

-- a wake for the wait numbered seq only
local function wake_seq(co, seq, a, b, c)
  if waiting[co] ~= seq then return end
  return wake_now(co, a, b, c)
end

-- the C core's wakes run from the queue, for the wait parked now
local function wake(co, a, b, c)
  queue(wake_seq, co, waiting[co], a, b, c)
end

-- End co's pending wait early with nil, reason: its canceler (a CANCEL,
-- a stopped player) ends it through its own waker, or it is woken now;
-- what its waker sends later is dropped (wake_seq).
local function cancel_wait(co, reason)
  if not waiting[co] then return false end
  local c = cancelers[co]
  if c == CANCELLING then return true end
  if c then
    cancelers[co] = CANCELLING
    c(co, reason)
  else
    wake_now(co, nil, reason)
  end
  return true
end

-- co belongs to call (one field for the usual single coroutine)
local function own(co, call)
  owners[co] = call
  local first = call._co
  if not first then
    call._co = co
  elseif first ~= co then
    local more = call._cos
    if not more then
      more = {}
      call._cos = more
    end
    more[#more + 1] = co
  end
end

-- the waits pending now in the call's coroutines: { co = seq }, or nil
local function owned_waits(call)
  local snap
  local co = call._co
  if co and owners[co] == call and waiting[co] then
    snap = { [co] = waiting[co] }
  end
  for _, c in ipairs(call._cos or {}) do
    if owners[c] == call and waiting[c] then
      snap = snap or {}
      snap[c] = waiting[c]
    end
  end
  return snap
end

-- end those of them that still wait on the same wait
local function cancel_owned(snap, reason)
  if not snap then return end
  for co, seq in pairs(snap) do
    if waiting[co] == seq then cancel_wait(co, reason) end
  end
end

local function current(name)
  local co, main = co_running()
  if main or not driven[co] then
    error(name .. ": must be called from a coroutine run by luasip " ..
          "(wrap the code in sip.run(function() ... end) or sip.spawn)", 3)
  end
  return co
end
sip._current = current

-- park the running coroutine; `cancel(co, reason)`, when given, is how
-- to end this wait early (it must end it, through its waker or at once)
local function wait(cancel)
  if cancel then cancelers[co_running()] = cancel end
  return co_yield(WAIT)
end
sip._wait = wait

--- Start fn(...) in a new coroutine driven by luasip; it runs at once until
-- its first wait. Errors are logged with their traceback.
-- @func fn the function to run
-- @param ... its arguments
-- @treturn thread the coroutine
function sip.spawn(fn, ...)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'spawn' (function expected, got " .. type(fn) .. ")", 2)
  end
  local co = co_create(fn)
  driven[co] = true
  -- a coroutine spawned by a call's coroutine belongs to that call too
  local owner = owners[co_running()]
  if owner then own(co, owner) end
  resume(co, ...)
  return co
end

local function spawn_with(on_exit, fn, ...)
  local co = co_create(fn)
  driven[co] = on_exit or true
  resume(co, ...)
  return co
end

-- spawn_with, the coroutine belonging to `owner` (a call) from its start
local function spawn_owned(on_exit, owner, fn, ...)
  local co = co_create(fn)
  driven[co] = on_exit or true
  if owner then own(co, owner) end
  resume(co, ...)
  return co
end
sip._spawn_with = spawn_with

-- the next task for a pooled coroutine, taken as it starts
local next_fn, next_arg

-- a tail call: neither the task's function nor its argument stays on the
-- coroutine's stack once it returns, so a request or call nobody keeps
-- is collected while its coroutine waits in the pool
local function run_one()
  local fn, a = next_fn, next_arg
  next_fn, next_arg = nil, nil
  return fn(a)
end

local function pooled_main()
  while true do
    co_yield(DONE, run_one())
  end
end

-- fn(a) in a pooled coroutine, then on_exit(ctx, ok, ...) (ctx not nil);
-- nothing outside keeps the coroutine, which is reused after
local function spawn_task(on_exit, ctx, fn, a, owner)
  local co
  while pool_n > 0 do
    local c = pool[pool_n]
    pool[pool_n] = nil
    pool_n = pool_n - 1
    if co_status(c) == "suspended" then
      co = c
      break
    end
  end
  co = co or co_create(pooled_main)
  driven[co] = on_exit
  task_ctx[co] = ctx
  if owner then own(co, owner) end
  next_fn, next_arg = fn, a
  resume(co)
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
  local owner = owners[co]
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

local UA = core.UA.__index          -- the C methods; Lua ones join them
local handlers = setmetatable({}, { __mode = "k" })
local proxies = setmetatable({}, { __mode = "k" })
local ua_auth = setmetatable({}, { __mode = "k" })
local event_queues = setmetatable({}, { __mode = "k" })  -- ua -> its ua:events() queue
local sip_auth = require "sip.auth"
sip._handlers = handlers

local check = require "sip.check"
local sip_resolve = require "sip.resolve"

local ua_options = {
  listen = "string|table", proxy = "string", user_agent = "string", t1 = "number",
  t2 = "number", t4 = "number", max_udp = "number", max_message = "number",
  idle_timeout = "number", max_connections = "number", max_server_transactions = "number",
  auth = "table|function", tls = "table", header_timeout = "number",
  max_connections_per_ip = "number", max_headers = "number", max_header_line = "number",
  contact = "string", media = "table", dns = "table", keepalive = "number",
}
local TLS_OPTIONS = {
  cert = "string", key = "string", cafile = "string", capath = "string", verify = "boolean",
  verify_client = "boolean", allow_wildcard = "boolean", tls13 = "boolean",
  handshake_timeout = "number",
}
local MEDIA_OPTIONS = { addr = "string", ports = "string", codecs = "table" }
local ua_media = setmetatable({}, { __mode = "k" })   -- ua -> its media settings
local ua_contacts = setmetatable({}, { __mode = "k" })  -- ua -> sip.ua{contact}
local ua_keepalive = setmetatable({}, { __mode = "k" })  -- ua -> sip.ua{keepalive}

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
--   `max_connections_per_ip`, `max_server_transactions`.
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
  return ua
end

local function check_method(method, fname)
  if type(method) ~= "string" or not method:match("^[%w%-%.!%%%*_%+`'~]+$") then
    error("bad argument #1 to '" .. fname .. "' (method name expected)", 3)
  end
  return method:upper()
end

-- self must be an open sip.UA (a closed one has no handler table)
local function check_ua(self, fname)
  check.self(self, core.UA, "sip.UA", fname, 3)
  if not handlers[self] then
    error("bad self to '" .. fname .. "' (the user agent is closed)", 3)
  end
  return self
end
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
-- `Call`, not a request.
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
  local state = opts.auth_state or (creds and sip_auth.new_state(creds))
  local pre = state and sip_auth.preempt(state, method, uri, opts.body)
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
                  sip_auth.answer(state, res, method, uri, opts.body)
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

local internal = {
  current = current, wait = wait, wake_now = wake_now, spawn_with = spawn_with, log = log,
  spawn_task = spawn_task, spawn_owned = spawn_owned, own = own, cancel_wait = cancel_wait,
  owned_waits = owned_waits, cancel_owned = cancel_owned, check = check, check_ua = check_ua,
  ua_media = ua_media, ua_contacts = ua_contacts, ua_keepalive = ua_keepalive,
  proxies = proxies, ua_auth = ua_auth, auth = sip_auth,
}

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
core.Message.methods.authenticate = function(req, opts)
  return sip_auth.authenticate(req, opts)
end
internal.is_driven = function(co) return driven[co] ~= nil end
sip.sdp = require "sip.sdp"
internal.media = require("sip.media")(sip, internal)
require("sip.call")(sip, internal)
require("sip.register")(sip, internal)
sip_resolve.install(sip, internal)

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
  if internal.close_registrations then internal.close_registrations(self) end
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

-- Called from the queue for each new request a handler serves.
local function dispatch_now(ua, req)
  local hs = handlers[ua]
  if getmetatable(req) == CallMT then
    local fn = hs and (hs.INVITE or hs["*"])
    if fn then
      internal.incoming_call(ua, req, fn)
    else
      req:_reply(405)
      req:_end()
    end
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
    queue(internal.call_event, a, b, c)
  else
    queue(dispatch_now, a, b)
  end
end

core.set_hooks(wake, dispatch, flush)

return sip
