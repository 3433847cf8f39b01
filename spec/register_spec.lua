--- Registration and digest authentication between two Lua UAs in one
-- process: a small registrar (req:authenticate) and a client (ua:register,
-- ua:request, ua:invite). Granted expires, refreshes, 423 Min-Expires,
-- unregister, wrong passwords, stale nonces, on_change, ua:close(), the
-- SHA algorithms, several challenges, 407 on INVITE, credentials as a
-- function and no user enumeration.
local sip = require "sip"
local core = require "sip.core"
local helper = require "helper"

local REALM = "example.com"
local AOR = "sip:alice@example.com"

-- A registrar UA. o: credentials, algorithms, nonce_expires (req:authenticate
-- expires=), max_expires (grants at most this), min_expires (423 below),
-- hook(req, n) run before authentication (a status it returns is the reply).
-- r.seen lists what each REGISTER carried; r.bindings maps AOR -> binding.
local function registrar(o)
  o = o or {}
  local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
  local r = { ua = ua, seen = {}, bindings = {} }
  ua:on("REGISTER", function(req)
    local n = #r.seen + 1
    r.seen[n] = { expires = req:header("Expires"), authorization = req:header("Authorization"),
                  contact = req:header("Contact"), cseq = req.cseq, call_id = req.call_id }
    if o.hook then
      local st, reason, opts = o.hook(req, n)
      if st then return st, reason, opts end
    end
    local user = req:authenticate{ realm = REALM, credentials = o.credentials or { alice = "secret" },
                                   algorithms = o.algorithms, expires = o.nonce_expires }
    if not user then return end
    r.seen[n].user = user
    local asked = tonumber(req:header("Expires")) or 3600
    if o.min_expires and asked > 0 and asked < o.min_expires then
      return 423, nil, { headers = { ["Min-Expires"] = tostring(o.min_expires) } }
    end
    local aor = req.to_uri
    if asked == 0 then
      r.bindings[aor] = nil
      return 200
    end
    local contact = req:header("Contact"):match("<([^>]*)>")
    local granted = math.min(asked, o.max_expires or asked)
    r.bindings[aor] = { contact = contact, expires = granted, user = user }
    return 200, nil, { headers = { Contact = "<" .. contact .. ">;expires=" .. granted } }
  end)
  return r
end

local function client()
  return assert(sip.ua{ listen = "udp:127.0.0.1:0" })
end

-- wait (in a luasip coroutine) until cond() holds or `timeout` passes
local function eventually(cond, timeout)
  local deadline = sip.now() + (timeout or 5)
  while not cond() do
    if sip.now() > deadline then return false end
    sip.sleep(0.05)
  end
  return true
end

local function expires_seen(r)
  local t = {}
  for i, s in ipairs(r.seen) do t[i] = s.expires end
  return t
end

describe("registration with digest authentication", function()
  it("registers with MD5 digest: 401, then 200 with the binding", function()
    local r, c = registrar(), client()
    finally(function() c:close(); r.ua:close() end)
    helper.run(function()
      local reg, err = c:register{ registrar = r.ua:uri(), aor = AOR, user = "alice",
                                   password = "secret", expires = 600 }
      assert.is_nil(err)
      assert.are.equal("registered", reg.state)
      assert.are.equal(600, reg.expires)
      assert.are.equal(0, reg.refreshes)
      assert.are.equal(2, #r.seen)
      assert.is_nil(r.seen[1].authorization)
      local a = r.seen[2].authorization
      assert.matches('^Digest ', a)
      assert.matches('username="alice"', a)
      assert.matches('realm="example.com"', a)
      assert.matches('algorithm=MD5', a)
      assert.matches('qop=auth', a)
      assert.matches('nc=00000001', a)
      assert.are.equal(r.seen[1].call_id, r.seen[2].call_id)
      assert.are.equal(r.seen[1].cseq + 1, r.seen[2].cseq)
      assert.are.equal("alice", r.seen[2].user)
      local b = r.bindings[AOR]
      assert.is_table(b)
      assert.are.equal(c:uri("alice"), b.contact)
      assert.is_true(reg:unregister())
    end)
  end)

  it("uses the expires the registrar granted, not the one it asked for", function()
    local r, c = registrar{ max_expires = 120 }, client()
    finally(function() c:close(); r.ua:close() end)
    helper.run(function()
      local reg = assert(c:register{ registrar = r.ua:uri(), aor = AOR, user = "alice",
                                     password = "secret", expires = 600 })
      assert.are.equal("600", r.seen[2].expires)
      assert.are.equal(120, reg.expires)
      assert.is_true(reg:unregister())
    end)
  end)

  it("refreshes before expiry (reg.refreshes grows with a short expires)", function()
    local r, c = registrar{ max_expires = 2 }, client()
    finally(function() c:close(); r.ua:close() end)
    helper.run(function()
      local reg = assert(c:register{ registrar = r.ua:uri(), aor = AOR, user = "alice",
                                     password = "secret", expires = 600 })
      assert.are.equal(2, reg.expires)
      local t0 = sip.now()
      assert.is_true(eventually(function() return reg.refreshes >= 2 end, 5),
                     "refreshes: " .. reg.refreshes)
      -- each refresh before the binding expired (2 s granted)
      assert.is_true(sip.now() - t0 < 4)
      assert.are.equal("registered", reg.state)
      -- one REGISTER per refresh: the nonce is reused with nc counting up
      assert.is_true(#r.seen >= 4)
      assert.matches("nc=00000002", r.seen[3].authorization or "", 1, true)
      -- the refreshes belong to the same registration: one Call-ID, CSeq growing
      for i = 2, #r.seen do
        assert.are.equal(r.seen[1].call_id, r.seen[i].call_id)
        assert.is_true(r.seen[i].cseq > r.seen[i - 1].cseq)
      end
      assert.is_table(r.bindings[AOR])
      assert.is_true(reg:unregister())
    end, 15)
  end)

  it("follows 423 Interval Too Brief to the registrar's Min-Expires", function()
    local r, c = registrar{ min_expires = 300 }, client()
    finally(function() c:close(); r.ua:close() end)
    helper.run(function()
      local reg, err = c:register{ registrar = r.ua:uri(), aor = AOR, user = "alice",
                                   password = "secret", expires = 60 }
      assert.is_nil(err)
      assert.are.equal(300, reg.expires)
      local seen = expires_seen(r)
      assert.are.equal("60", seen[1])
      assert.are.equal("300", seen[#seen])
      assert.are.equal(300, r.bindings[AOR].expires)
      assert.is_true(reg:unregister())
    end)
  end)

  it("unregisters: Expires 0, the binding is removed, refreshing stops", function()
    local r, c = registrar{ max_expires = 2 }, client()
    finally(function() c:close(); r.ua:close() end)
    helper.run(function()
      local reg = assert(c:register{ registrar = r.ua:uri(), aor = AOR, user = "alice",
                                     password = "secret", expires = 600 })
      assert.is_table(r.bindings[AOR])
      assert.is_true(reg:unregister())
      assert.are.equal("unregistered", reg.state)
      assert.is_nil(r.bindings[AOR])
      assert.are.equal("0", r.seen[#r.seen].expires)
      assert.is_string(r.seen[#r.seen].authorization)
      local n = #r.seen
      sip.sleep(1.5)                          -- a refresh would be due after 1 s
      assert.are.equal(n, #r.seen)
      assert.is_true(reg:unregister())        -- again: nothing to do
      assert.are.equal(n, #r.seen)
    end)
  end)

  it("fails with a wrong password after exactly one retry", function()
    local r, c = registrar(), client()
    finally(function() c:close(); r.ua:close() end)
    helper.run(function()
      local reg, err, res = c:register{ registrar = r.ua:uri(), aor = AOR, user = "alice",
                                        password = "wrong", expires = 600 }
      assert.is_nil(reg)
      assert.matches("^401", err)
      assert.are.equal(401, res.status)
      sip.sleep(0.3)                          -- nothing more comes
      assert.are.equal(2, #r.seen)
      assert.is_nil(r.bindings[AOR])
    end)
  end)

  it("answers a stale nonce with a new one without asking the script", function()
    local stale_sent
    local r = registrar{ nonce_expires = 1, hook = function(_, n)
      -- the first answer arrives after its nonce expired (a slow network)
      if n == 2 then sip.sleep(1.3) end
    end }
    local c = client()
    finally(function() c:close(); r.ua:close(); sip.trace(false) end)
    sip.trace(function(dir, _, _, text)
      if dir == "out" and text:find("^SIP/2.0 401") and text:find("stale=true", 1, true) then
        stale_sent = true
      end
    end)
    helper.run(function()
      local states = {}
      local reg, err = c:register{ registrar = r.ua:uri(), aor = AOR, user = "alice",
        password = "secret", expires = 600,
        on_change = function(_, state) states[#states + 1] = state end }
      assert.is_nil(err)
      assert.are.equal("registered", reg.state)
      assert.is_true(stale_sent)
      assert.are.equal(3, #r.seen)
      local n2 = r.seen[2].authorization:match('nonce="([^"]+)"')
      local n3 = r.seen[3].authorization:match('nonce="([^"]+)"')
      assert.is_string(n3)
      assert.are_not.equal(n2, n3)
      assert.are.equal("alice", r.seen[3].user)
      sip.sleep(0.05)
      assert.are.same({ "registered" }, states)
      assert.is_true(reg:unregister())
    end)
  end)

  it("calls on_change with each state: registered, failed, registered, unregistered", function()
    local r = registrar{ max_expires = 1, hook = function(_, n)
      if n == 3 then return 503 end           -- the first refresh fails
    end }
    local c = client()
    finally(function() c:close(); r.ua:close() end)
    helper.run(function()
      local states, errs, regs = {}, {}, {}
      local reg = assert(c:register{ registrar = r.ua:uri(), aor = AOR, user = "alice",
        password = "secret", expires = 600, retry = 0.2, retry_max = 1,
        on_change = function(rg, state, err)
          states[#states + 1] = state
          errs[#errs + 1] = tostring(err)
          regs[#regs + 1] = rg
        end })
      assert.is_true(eventually(function() return #states >= 3 end, 6),
                     "states: " .. table.concat(states, ","))
      assert.is_true(reg:unregister())
      sip.sleep(0.05)
      assert.are.same({ "registered", "failed", "registered", "unregistered" }, states)
      assert.matches("^503", errs[2])
      for _, rg in ipairs(regs) do assert.are.equal(reg, rg) end
    end, 15)
  end)

  it("unregisters everything on ua:close()", function()
    local r, c = registrar(), client()
    finally(function() c:close(); r.ua:close() end)
    helper.run(function()
      local reg = assert(c:register{ registrar = r.ua:uri(), aor = AOR, user = "alice",
                                     password = "secret", expires = 600 })
      assert(c:register{ registrar = r.ua:uri(), aor = "sip:alice@other.example.com",
                         user = "alice", password = "secret", expires = 600 })
      assert.is_table(r.bindings[AOR])
      assert.is_table(r.bindings["sip:alice@other.example.com"])
      c:close()
      assert.is_nil(r.bindings[AOR])
      assert.is_nil(r.bindings["sip:alice@other.example.com"])
      assert.are.equal("unregistered", reg.state)
      assert.are.equal("0", r.seen[#r.seen].expires)
    end)
  end)

  for _, alg in ipairs{ "SHA-256", "SHA-512-256" } do
    it("registers with " .. alg .. " when the registrar offers only that", function()
      local r, c = registrar{ algorithms = { alg } }, client()
      finally(function() c:close(); r.ua:close() end)
      helper.run(function()
        local res = assert(c:request("REGISTER", r.ua:uri(), { to = "<" .. AOR .. ">",
                                                                from = "<" .. AOR .. ">" }))
        assert.are.equal(401, res.status)
        local chs = res:headers("WWW-Authenticate")
        assert.are.equal(1, #chs)
        assert.matches("algorithm=" .. alg:gsub("%-", "%%-") .. ",", chs[1])
        local reg, err = c:register{ registrar = r.ua:uri(), aor = AOR, user = "alice",
                                     password = "secret", expires = 600 }
        assert.is_nil(err)
        assert.are.equal("registered", reg.state)
        assert.matches("algorithm=" .. alg:gsub("%-", "%%-"), r.seen[#r.seen].authorization)
        assert.are.equal("alice", r.seen[#r.seen].user)
        assert.is_true(reg:unregister())
      end)
    end)
  end

  it("picks the strongest of several challenges", function()
    for _, order in ipairs{ { "MD5", "SHA-256", "SHA-512-256" }, { "SHA-512-256", "MD5", "SHA-256" } } do
      local r, c = registrar{ algorithms = order }, client()
      finally(function() c:close(); r.ua:close() end)
      helper.run(function()
        local res = assert(c:request("REGISTER", r.ua:uri(), { to = "<" .. AOR .. ">",
                                                                from = "<" .. AOR .. ">" }))
        assert.are.equal(401, res.status)
        assert.are.equal(3, #res:headers("WWW-Authenticate"))
        local reg = assert(c:register{ registrar = r.ua:uri(), aor = AOR, user = "alice",
                                       password = "secret", expires = 600 })
        assert.matches("algorithm=SHA%-512%-256", r.seen[#r.seen].authorization)
        assert.is_true(reg:unregister())
      end)
      c:close()
      r.ua:close()
    end
  end)

  it("looks credentials up through a function: password or { ha1 = }", function()
    local asked = {}
    local r = registrar{ credentials = function(user, realm)
      asked[#asked + 1] = user .. "@" .. tostring(realm)
      if user == "alice" then return "secret" end
      if user == "bob" then return { ha1 = core.auth.ha1("MD5", "bob", realm, "pw2") } end
      return nil
    end }
    local c = client()
    finally(function() c:close(); r.ua:close() end)
    helper.run(function()
      local ra = assert(c:register{ registrar = r.ua:uri(), aor = AOR, user = "alice",
                                    password = "secret", expires = 600 })
      local rb = assert(c:register{ registrar = r.ua:uri(), aor = "sip:bob@example.com",
                                    user = "bob", password = "pw2", expires = 600 })
      assert.are.equal("bob", r.bindings["sip:bob@example.com"].user)
      local bad, err = c:register{ registrar = r.ua:uri(), aor = "sip:bob@example.com",
                                   user = "bob", password = "nope", expires = 600 }
      assert.is_nil(bad)
      assert.matches("^401", err)
      assert.are.same({ "alice@example.com", "bob@example.com", "bob@example.com" }, asked)
      assert.is_true(ra:unregister())
      assert.is_true(rb:unregister())
    end)
  end)

  it("challenges an unknown user exactly like a known one with a wrong password", function()
    local r, c = registrar(), client()
    finally(function() c:close(); r.ua:close() end)
    -- the response with what varies per request blanked out
    local function shape(res)
      local lines = {}
      for line in res:raw():gmatch("[^\r\n]+") do
        line = line:gsub('nonce="[^"]*"', 'nonce="N"'):gsub(";tag=[^;%s]+", ";tag=T")
                   :gsub(";branch=[^;%s]+", ";branch=B")
        local name = line:match("^([%w%-]+):")
        if name == "Call-ID" or name == "i" then line = "Call-ID: C" end
        if name == "CSeq" then line = "CSeq: S" end
        if name == "From" or name == "To" then line = line:gsub("sip:%w+@", "sip:U@") end
        lines[#lines + 1] = line
      end
      return table.concat(lines, "\n")
    end
    helper.run(function()
      local res = {}
      for i, who in ipairs{ "alice", "mallory" } do
        local aor = "sip:" .. who .. "@example.com"
        res[i] = assert(c:request("REGISTER", r.ua:uri(), { to = "<" .. aor .. ">",
          from = "<" .. aor .. ">", headers = { Contact = "<" .. c:uri(who) .. ">" },
          auth = { user = who, password = "wrong" } }))
      end
      assert.are.equal(401, res[1].status)
      assert.are.equal(401, res[2].status)
      assert.are.equal(4, #r.seen)            -- one retry each, same as a known user
      assert.are.equal(shape(res[1]), shape(res[2]))
      assert.is_nil(res[2]:header("WWW-Authenticate"):find("stale", 1, true))
      -- and the first challenge, before any credentials, is the same too
      local first = {}
      for i, who in ipairs{ "alice", "mallory" } do
        local aor = "sip:" .. who .. "@example.com"
        first[i] = assert(c:request("REGISTER", r.ua:uri(), { to = "<" .. aor .. ">",
                                                               from = "<" .. aor .. ">" }))
      end
      assert.are.equal(shape(first[1]), shape(first[2]))
      assert.are.equal(shape(first[1]), shape(res[1]))
    end)
  end)
end)

describe("digest on INVITE", function()
  local function callee(o)
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    local seen = {}
    ua:on("INVITE", function(call)
      seen[#seen + 1] = { proxy_authorization = call.invite:header("Proxy-Authorization"),
                          authorization = call.invite:header("Authorization") }
      local user = call:authenticate{ realm = REALM, credentials = { alice = "secret" },
                                      proxy = o.proxy }
      if not user then return end
      seen[#seen].user = user
      assert(call:answer())
      call:wait(10)
    end)
    return ua, seen
  end

  it("answers 407 from call:authenticate{proxy = true} and the call goes through", function()
    local b, seen = callee{ proxy = true }
    local a = client()
    finally(function() a:close(); b:close(); sip.trace(false) end)
    local challenged
    sip.trace(function(dir, _, _, text)
      if dir == "in" and text:find("^SIP/2.0 407") then
        challenged = text:match("\nProxy%-Authenticate: ([^\r\n]*)")
      end
    end)
    helper.run(function()
      local call, err = a:invite(b:uri("bob"), { auth = { user = "alice", password = "secret" },
                                                 timeout = 5 })
      assert.is_nil(err)
      assert.are.equal("confirmed", call.state)
      assert.matches('^Digest realm="example.com"', challenged)
      assert.are.equal(2, #seen)
      assert.is_nil(seen[1].proxy_authorization)
      assert.matches('username="alice"', seen[2].proxy_authorization)
      assert.matches('uri="' .. b:uri("bob"):gsub("%p", "%%%0") .. '"', seen[2].proxy_authorization)
      assert.is_nil(seen[2].authorization)
      assert.are.equal("alice", seen[2].user)
      assert.is_true(call:hangup())
    end)
  end)

  it("answers 401 on an INVITE without proxy, and fails with a wrong password", function()
    local b, seen = callee{}
    local a = client()
    finally(function() a:close(); b:close() end)
    helper.run(function()
      local call = assert(a:invite(b:uri("bob"), { auth = { user = "alice", password = "secret" },
                                                   timeout = 5 }))
      assert.matches('username="alice"', seen[2].authorization)
      assert.is_true(call:hangup())
      local bad, err, res = a:invite(b:uri("bob"), { auth = { user = "alice", password = "nope" },
                                                     timeout = 5 })
      assert.is_nil(bad)
      assert.matches("^401", err)
      assert.are.equal(401, res.status)
      assert.are.equal(4, #seen)
    end)
  end)
end)
