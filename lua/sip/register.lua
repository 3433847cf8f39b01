--- Registrations (RFC 3261 section 10): ua:register keeps a binding
-- alive, refreshing before it expires, backing off after failures and
-- following 423 Min-Expires. Loaded by sip.
-- @module sip

local core = require "sip.core"

return function(_, internal)
  local UA = core.UA.__index
  local current, wait_for_wake, spawn_with, log, wake_now =
    internal.current, internal.wait, internal.spawn_with, internal.log, internal.wake_now

  local Registration = {}
  Registration.__index = Registration
  Registration.__name = "sip.Registration"

  local regs = setmetatable({}, { __mode = "k" })     -- ua -> { reg = true }
  internal.registrations = regs

  function Registration.__tostring(r)
    return string.format("sip.Registration: %s %s (expires %s)", r.aor, r.state,
                         tostring(r.expires))
  end

  local function set_state(r, state, err, res)
    local changed = r.state ~= state
    r.state = state
    r.error = err
    if changed and r.on_change then
      spawn_with(function(ok, tb)
        if not ok then log("error", "on_change failed: " .. tb) end
      end, r.on_change, r, state, err, res)
    end
  end

  -- the expiry the registrar granted our contact (10.2.4)
  local function granted(r, res, asked)
    local ours = r.contact_uri
    for _, c in ipairs(res:headers("Contact")) do
      for part in (c .. ","):gmatch("([^,]+),") do
        local uri = part:match("<([^>]*)>") or part:match("^%s*([^;%s]+)")
        if uri and ours and uri:lower() == ours:lower() then
          local e = part:match(";%s*[Ee][Xx][Pp][Ii][Rr][Ee][Ss]%s*=%s*(%d+)")
          if e then return tonumber(e) end
        end
      end
    end
    local e = res:header("Expires")
    return tonumber(e) or asked
  end

  -- one REGISTER exchange, with 423 handled; auth is ua:request's
  local function send(r, expires)
    for _ = 1, 3 do
      r.cseq = r.cseq + 1
      local res, err = r.ua:request("REGISTER", r.registrar, {
        to = "<" .. r.aor .. ">", from = "<" .. r.aor .. ">;tag=" .. r.tag,
        call_id = r.call_id, cseq = r.cseq,
        headers = { Contact = "<" .. r.contact_uri .. ">", Expires = tostring(expires) },
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

  local check = internal.check
  local REGISTER_OPTS = {
    registrar = "string", aor = "string", user = "string", password = "string",
    auth = "table|function", expires = "number", contact = "string", on_change = "function",
    retry = "number", retry_max = "number", timeout = "number",
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
  -- @tab opts the options above
  -- @treturn Registration the registration, `"registered"` (or
  -- `"unregistered"` when `expires = 0` was asked)
  -- @return[2] nil
  -- @treturn[2] string `"403 Forbidden"`, `"timeout"` ...
  -- @treturn[2] ?Message the response, when there was one
  function UA:register(opts)
    internal.check_ua(self, "ua:register")
    if type(opts) ~= "table" then
      error("bad argument #1 to 'ua:register' (table expected, got " .. type(opts) .. ")", 2)
    end
    check.opts(opts, "ua:register", 1, REGISTER_OPTS)
    for _, k in ipairs{ "registrar", "aor" } do
      if type(opts[k]) ~= "string" or opts[k]:find("[\r\n<>]") then
        error("bad argument #1 to 'ua:register' (option '" .. k .. "' must be a SIP URI string)", 2)
      end
    end
    local expires = opts.expires or 3600
    if expires < 0 then
      error("bad argument #1 to 'ua:register' (option 'expires' must not be negative)", 2)
    end
    current("ua:register")
    local auth = opts.auth
    if not auth and opts.user and opts.password then
      auth = { user = opts.user, password = opts.password }
    end
    local ua_contact = internal.ua_contacts[self]
    local user = opts.user or opts.aor:match("^sips?:([^@;]+)@") or "luasip"
    local r = setmetatable({
      ua = self, registrar = opts.registrar, aor = opts.aor, auth = auth,
      asked = math.floor(expires), expires = nil, state = "new", cseq = 0, refreshes = 0,
      call_id = random_token(20), tag = random_token(10),
      -- the binding: the option, else the UA's own contact (its URI:
      -- behind NAT, the public address), else where we listen
      contact_uri = opts.contact or
                    (ua_contact and (ua_contact:match("<([^>]+)>") or ua_contact:match("^%s*(%S+)"))) or
                    self:uri(user),
      on_change = opts.on_change, retry = opts.retry or 5, retry_max = opts.retry_max or 300,
      timeout = opts.timeout,
    }, Registration)
    -- one digest state for the registration's life: refreshes reuse the
    -- nonce with nc counting up instead of a 401 round trip each
    local creds = auth or internal.ua_auth[self]
    r.auth_state = creds and internal.auth.new_state(creds)
    local res, err, asked = send(r, r.asked)
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
    return r
  end

  local function stop(r)
    r.state = "unregistered"
    local ua_regs = regs[r.ua]
    if ua_regs then ua_regs[r] = nil end
    if r._sleeping then wake_now(r._sleeping) end
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
    if internal.is_driven(coroutine.running()) then
      r:unregister()
    else
      spawn_with(nil, r.unregister, r)
    end
  end

  -- ua:close() unregisters what it can: inside a driven coroutine each
  -- registration is removed (yielding); otherwise they just stop.
  function internal.close_registrations(ua)
    local list = regs[ua]
    if not list then return end
    regs[ua] = nil
    local co, main = coroutine.running()
    local can_wait = not main and internal.is_driven(co)
    for r in pairs(list) do
      if can_wait then
        r:unregister()
      else
        stop(r)
      end
    end
  end

  return Registration
end
