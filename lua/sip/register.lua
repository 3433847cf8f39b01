--- Registrations (RFC 3261 section 10): ua:register keeps a binding
-- alive, refreshing before it expires, backing off after failures and
-- following 423 Min-Expires. Loaded by sip.
-- @module sip

local core = require "sip.core"

local sched = require "sip.sched"
local state = require "sip.state"
local class = require "sip.class"
local check = require "sip.check"
local auth = require "sip.auth"

-- ua:register goes on sip.UA through class.interpose
local UA = class.methods(core.UA)
local current, wait_for_wake, spawn_with, log, wake_now =
  sched.current, sched.wait, sched.spawn_with, sched.log, sched.wake_now

local Registration = {}
Registration.__index = Registration
Registration.__name = "sip.Registration"

local regs = setmetatable({}, { __mode = "k" })     -- ua -> { reg = true }

function Registration.__tostring(r)
  return string.format("sip.Registration: %s %s (expires %s)", r.aor, r.state,
                       tostring(r.expires))
end

local function set_state(r, new, err, res)
  local changed = r.state ~= new
  r.state = new
  r.error = err
  if changed and r.on_change then
    spawn_with(function(ok, tb)
      if not ok then log("error", "on_change failed: " .. tb) end
    end, r.on_change, r, new, err, res)
  end
end

-- the expiry the registrar granted our contact (10.2.4)
local function granted(r, res, asked)
  local ours = r.contact_uri and r.contact_uri:lower()
  for _, c in ipairs(res:headers("Contact")) do
    -- the core's name-addr parser: a comma inside quotes or <> does not
    -- split, and a malformed value is skipped, not half read
    for _, na in ipairs(core.name_addrs(c) or {}) do
      if ours and na.uri:lower() == ours then
        local e = tonumber(na.params.expires)
        if e then return e end
      end
    end
  end
  local e = res:header("Expires")
  return tonumber(e) or asked
end

-- one REGISTER exchange, with 423 handled; auth is ua:request's.
-- `drop`: a former contact of ours whose binding goes (expires=0)
local function send(r, expires, drop)
  for _ = 1, 3 do
    r.cseq = r.cseq + 1
    local contact = "<" .. r.contact_uri .. ">"
    if drop then contact = "<" .. drop .. ">;expires=0, " .. contact end
    local res, err = r.ua:request("REGISTER", r.registrar, {
      to = "<" .. r.aor .. ">", from = "<" .. r.aor .. ">;tag=" .. r.tag,
      call_id = r.call_id, cseq = r.cseq,
      headers = { Contact = contact, Expires = tostring(expires) },
      auth = r.auth, auth_state = r.auth_state, timeout = r.timeout })
    if not res then return nil, err end
    -- ua:request may have retried with auth: continue after its CSeq
    r.cseq = math.max(r.cseq, res.cseq or r.cseq)
    if res.status == 423 and expires > 0 then
      local min = tonumber(res:header("Min-Expires"))
      if not min or min <= expires then return nil, "423 Interval Too Brief", res end
      expires = min
      r.asked = min
    elseif res.status >= 200 and res.status < 300 then
      return res, nil, expires
    else
      return nil, res.status .. " " .. (res.reason or ""), res
    end
  end
  return nil, "423 Interval Too Brief"
end

-- the flow a 2xx came back on: the one to keep alive
local function note_flow(r, res)
  local host, port = (res.source or ""):match("^%[?(.-)%]?:(%d+)$")
  if host and res.transport then
    r.flow = { transport = res.transport:lower(), host = host, port = tonumber(port) }
  end
end

-- RFC 3581: the address the registrar saw us at, when our Contact
-- names another (a NAT between us): "sip:user@198.51.100.7:40112"
local function public_contact(r, res)
  local via = res.via or ""
  local received = via:match(";%s*[Rr][Ee][Cc][Ee][Ii][Vv][Ee][Dd]%s*=%s*([^;,%s]+)")
  local rport = tonumber(via:match(";%s*[Rr][Pp][Oo][Rr][Tt]%s*=%s*(%d+)"))
  if not received and not rport then return nil end
  local user, hostport, params = r.contact_uri:match("^(sips?:[^@]*@)([^;]*)(.*)$")
  if not user then
    user, hostport, params = r.contact_uri:match("^(sips?:)([^;]*)(.*)$")
  end
  if not hostport then return nil end
  local host, port = hostport:match("^(%[.-%]):?(%d*)$")
  if not host then host, port = hostport:match("^([^:]*):?(%d*)$") end
  local new_host = received and (received:find(":", 1, true) and "[" .. received .. "]" or received) or host
  local new_port = rport or tonumber(port)
  if new_host:lower() == host:lower() and new_port == tonumber(port) then return nil end
  return user .. new_host .. (new_port and ":" .. new_port or "") .. params
end

-- after a 2xx: learn the flow, and with rewrite_contact move the
-- binding to the public address (PJSIP's contact rewrite, eXosip2's
-- masquerading): one REGISTER drops the old contact and binds the new,
-- and the UA's calls name it too. The 2xx of that REGISTER is returned.
local function after_ok(r, res, asked)
  note_flow(r, res)
  if not r.rewrite then return res, nil, asked end
  local public = public_contact(r, res)
  if not public then return res, nil, asked end
  local old = r.contact_uri
  r.contact_uri = public
  local res2, err, asked2 = send(r, r.asked, old)
  if not res2 then
    r.contact_uri = old
    return nil, err, asked2
  end
  log("info", "registration " .. r.aor .. ": contact rewritten to " .. public ..
      " (the registrar sees us there)")
  if r.set_ua_contact then
    state.contacts[r.ua] = "<" .. public .. ">"
    r.ua:_set_contact("<" .. public .. ">")
  end
  note_flow(r, res2)
  return res2, nil, asked2
end

-- CRLF keep-alives on the registration's flow (RFC 5626 4.4.1): over
-- UDP a ping every `keepalive` s; over TCP/TLS the connection pings
-- when silent, and when it is gone (closed by the peer, no pong) the
-- binding is refreshed at once over a new one
local function pinger(r)
  while r.state ~= "unregistered" do
    r._pinging = current("registration")
    local _ <close> = core.timer(r.keepalive, r._pinging)
    wait_for_wake()
    r._pinging = nil
    if r.state == "unregistered" then break end
    local f = r.flow
    if f and r.state == "registered" then
      local ok = r.ua:_keepalive(f.transport, f.host, f.port, r.keepalive)
      if not ok and f.transport ~= "udp" and r._sleeping then
        log("info", "registration " .. r.aor .. ": flow to " .. f.host .. ":" .. f.port ..
            " lost, registering again")
        r.flow = nil
        wake_now(r._sleeping)
      end
    end
  end
end

-- refresh before expiry; back off after failures
local function keeper(r)
  local failures = 0
  while r.state ~= "unregistered" do
    local delay
    if r.state == "registered" then
      local e = r.expires
      delay = e > 60 and e - 30 or math.max(e / 2, 0.5)
    else
      delay = math.min(r.retry_max, r.retry * 2 ^ math.max(failures - 1, 0))
    end
    r._sleeping = current("registration")
    local _ <close> = core.timer(delay, r._sleeping)
    wait_for_wake()
    r._sleeping = nil
    if r.state == "unregistered" then break end
    local res, err, asked = send(r, r.asked)
    if r.state == "unregistered" then break end
    if res then res, err, asked = after_ok(r, res, asked) end
    if r.state == "unregistered" then break end
    if res then
      failures = 0
      r.expires = granted(r, res, asked)
      r.refreshes = r.refreshes + 1
      set_state(r, "registered", nil, res)
    else
      failures = failures + 1
      set_state(r, "failed", err, asked)
    end
  end
end

local REGISTER_OPTS = {
  registrar = "string", aor = "string", user = "string", password = "string",
  auth = "table|function", expires = "number", contact = "string", on_change = "function",
  retry = "number", retry_max = "number", timeout = "number", keepalive = "number",
  rewrite_contact = "boolean",
}

local random_token = core.token           -- the CSPRNG, like the core's tags

--- @type UA

--- Register and keep the registration fresh.
-- Sends REGISTER and waits for the first 2xx, then refreshes it in a
-- coroutine of its own until `reg:unregister()` or `ua:close()`: 30 s
-- before the granted expiry (at half of it when it is 60 s or less),
-- with the same Call-ID, the next CSeq and the last nonce's credentials;
-- a 423 is followed with the registrar's Min-Expires; a failed refresh
-- sets `"failed"` and retries after `retry`, then twice as long each
-- time up to `retry_max`. The expiry granted is the one on our Contact,
-- else the Expires header, else the one asked. docs/registration.md.
-- Options:
--
-- - `registrar` (required): the registrar's URI, the Request-URI
-- - `aor` (required): the address of record, in To and From
-- - `user`, `password`: the digest credentials (or `auth` as in
--   `ua:request`; else the UA's)
-- - `expires`: the lifetime to ask for (default 3600 s)
-- - `contact`: the contact to bind (default `ua:uri(user)`, `user` being
--   `opts.user` or the AOR's user part)
-- - `on_change`: `function(reg, state, err, res)` on each change of
--   state: `"registered"`, `"failed"` (`err` says why), `"unregistered"`
-- - `retry`: seconds before the first retry after a failed refresh (5)
-- - `retry_max`: the longest pause between retries (300)
-- - `timeout`: seconds to wait for each response (default Timer F)
-- - `keepalive`: seconds between CRLF keep-alives on the flow the
--   registration went over (RFC 5626 4.4.1; default the UA's
--   `keepalive`, else none): over UDP a ping to the registrar's address
--   from our socket, which keeps a NAT binding open; over TCP/TLS the
--   connection pings when silent and stays open (the registrar's
--   requests to us come back on it); when that connection is lost the
--   binding is registered again at once, over a new one
-- - `rewrite_contact`: when the registrar saw us at another address
--   than our Contact's (`received`/`rport` in the Via of its 2xx, RFC
--   3581: a NAT), bind that public address instead (one REGISTER
--   removes the old binding) and, unless the UA has a `contact` of its
--   own, use it as the UA's Contact from then on (false)
-- @tab opts the options above
-- @treturn Registration the registration, `"registered"` (or
-- `"unregistered"` when `expires = 0` was asked)
-- @return[2] nil
-- @treturn[2] string `"403 Forbidden"`, `"timeout"` ...
-- @treturn[2] ?Message the response, when there was one
function UA:register(opts)
  state.check_ua(self, "ua:register")
  if type(opts) ~= "table" then
    error("bad argument #1 to 'ua:register' (table expected, got " .. type(opts) .. ")", 2)
  end
  check.opts(opts, "ua:register", 1, REGISTER_OPTS)
  check.lines(opts, "ua:register", 1, { "contact", "user" })
  for _, k in ipairs{ "registrar", "aor" } do
    if type(opts[k]) ~= "string" or opts[k]:find("[\r\n<>]") then
      error("bad argument #1 to 'ua:register' (option '" .. k .. "' must be a SIP URI string)", 2)
    end
  end
  local expires = opts.expires or 3600
  if expires < 0 then
    error("bad argument #1 to 'ua:register' (option 'expires' must not be negative)", 2)
  end
  if opts.keepalive and opts.keepalive < 0 then
    error("bad argument #1 to 'ua:register' (option 'keepalive' must not be negative)", 2)
  end
  current("ua:register")
  local auth_opt = opts.auth
  if not auth_opt and opts.user and opts.password then
    auth_opt = { user = opts.user, password = opts.password }
  end
  local ua_contact = state.contacts[self]
  local user = opts.user or opts.aor:match("^sips?:([^@;]+)@") or "luasip"
  local r = setmetatable({
    ua = self, registrar = opts.registrar, aor = opts.aor, auth = auth_opt,
    asked = math.floor(expires), expires = nil, state = "new", cseq = 0, refreshes = 0,
    call_id = random_token(20), tag = random_token(10),
    -- the binding: the option, else the UA's own contact (its URI:
    -- behind NAT, the public address), else where we listen
    contact_uri = opts.contact or
                  (ua_contact and (ua_contact:match("<([^>]+)>") or ua_contact:match("^%s*(%S+)"))) or
                  self:uri(user),
    on_change = opts.on_change, retry = opts.retry or 5, retry_max = opts.retry_max or 300,
    timeout = opts.timeout,
    keepalive = opts.keepalive or state.keepalive[self] or 0,
    rewrite = opts.rewrite_contact,
    -- a rewrite moves the UA's Contact too unless the script set one
    set_ua_contact = not opts.contact and not ua_contact,
  }, Registration)
  -- one digest state for the registration's life: refreshes reuse the
  -- nonce with nc counting up instead of a 401 round trip each
  local creds = auth_opt or state.auth[self]
  r.auth_state = creds and auth.new_state(creds)
  local res, err, asked = send(r, r.asked)
  if res and r.asked > 0 then res, err, asked = after_ok(r, res, asked) end
  if not res then
    r.state = "failed"
    return nil, err, asked
  end
  r.expires = granted(r, res, asked)
  if r.expires <= 0 then
    -- expires = 0 asked (or granted): nothing to keep alive
    r.state = "unregistered"
    return r
  end
  set_state(r, "registered", nil, res)
  regs[self] = regs[self] or {}
  regs[self][r] = true
  r._keeper = spawn_with(function(ok, tb)
    if not ok then log("error", "registration refresh failed: " .. tb) end
  end, keeper, r)
  if r.keepalive > 0 then
    local f = r.flow
    -- a TCP/TLS flow takes this registration's interval at once
    if f and f.transport ~= "udp" then r.ua:_keepalive(f.transport, f.host, f.port, r.keepalive) end
    r._pinger = spawn_with(function(ok, tb)
      if not ok then log("error", "registration keep-alive failed: " .. tb) end
    end, pinger, r)
  end
  return r
end

local function stop(r)
  r.state = "unregistered"
  local ua_regs = regs[r.ua]
  if ua_regs then ua_regs[r] = nil end
  if r._sleeping then wake_now(r._sleeping) end
  if r._pinging then wake_now(r._pinging) end
end

--- A registration (`sip.Registration`), from `ua:register`: a table with
-- the fields below, kept fresh by the core.
-- `local reg <close> = ua:register{...}` unregisters it at the end of
-- the scope (nothing once it is unregistered).
--
-- Fields:
--
-- - `state`: `"registered"`, `"failed"` (the last refresh failed; it
--   is retried) or `"unregistered"` (after `reg:unregister()`, `ua:close()`
--   or `<close>`)
-- - `expires`: the lifetime granted, in seconds
-- - `refreshes`: how many refreshes succeeded
-- - `error`: why the last refresh failed
-- - `aor`: the address of record
-- - `registrar`: the registrar's URI
-- - `contact_uri`: the contact bound
-- - `call_id`: the Call-ID of its REGISTERs
-- @type Registration

--- Remove the binding (REGISTER with Expires: 0) and stop refreshing.
-- Waits for the answer; `on_change` gets `"unregistered"`. Harmless once
-- unregistered.
-- @treturn boolean true
-- @return[2] nil
-- @treturn[2] string why
-- @treturn[2] ?Message the response, when there was one
function Registration:unregister()
  if self.state == "unregistered" then return true end
  current("reg:unregister")
  stop(self)
  local res, err, extra = send(self, 0)
  if self.on_change then
    spawn_with(nil, self.on_change, self, "unregistered", err, extra)
  end
  if not res then return nil, err, extra end
  return true
end

--- `local reg <close> = ua:register{...}`: unregistered when the
-- variable goes out of scope; idempotent (nothing once unregistered).
-- Outside a coroutine luasip drives, the REGISTER runs in one of its own.
-- @local
function Registration.__close(r)
  if getmetatable(r) ~= Registration or r.state == "unregistered" then return end
  if sched.is_driven(coroutine.running()) then
    r:unregister()
  else
    spawn_with(nil, r.unregister, r)
  end
end

-- ua:close() unregisters what it can: inside a driven coroutine each
-- registration is removed (yielding); otherwise they just stop.
function Registration.close_all(ua)
  local list = regs[ua]
  if not list then return end
  regs[ua] = nil
  local co, main = coroutine.running()
  local can_wait = not main and sched.is_driven(co)
  for r in pairs(list) do
    if can_wait then
      r:unregister()
    else
      stop(r)
    end
  end
end

return Registration
