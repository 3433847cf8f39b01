--- Registration and digest authentication against real peers:
-- Kamailio (spec/kamailio/registrar.cfg) as registrar and authenticating
-- proxy, and SIPp registering with digest to examples/registrar.lua, which
-- is also checked as a registrar and a forking B2BUA with Lua UAs.
local sip = require "sip"
local helper = require "helper"

local root = helper.root

-- wait (in a luasip coroutine) until cond() holds or `timeout` passes
local function eventually(cond, timeout)
  local deadline = sip.now() + (timeout or 5)
  while not cond() do
    if sip.now() > deadline then return false end
    sip.sleep(0.05)
  end
  return true
end

-- Stop a process started with helper.spawn and its whole group. Besides
-- helper.stop_all(): its `kill -TERM -- -PID` is refused by dash (/bin/sh
-- on Debian), which would leave Kamailio and the registrar running.
local function stop(proc)
  if not proc then return end
  os.execute("kill -TERM -" .. proc.pid .. " 2>/dev/null")
  for _ = 1, 20 do
    if proc.done() then return end
    helper.spin(0.05)
  end
  os.execute("kill -KILL -" .. proc.pid .. " 2>/dev/null")
end

-- wait (outside a coroutine) until a probe UA gets any answer from uri
local function wait_ready(uri, proc, what)
  local probe = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
  local ok = false
  for _ = 1, 50 do
    if proc.done() then break end
    ok = helper.run(function()
      return probe:request("OPTIONS", uri, { timeout = 0.25 }) ~= nil
    end, 5)
    if ok then break end
    helper.spin(0.1)          -- not bound yet (ICMP port unreachable)
  end
  probe:close()
  if not ok then stop(proc) end
  assert(ok, what .. " did not start:\n" .. proc.log())
end

-- every SIP message the process sends and receives, as { dir, peer, text }
local function capture()
  local seen = {}
  sip.trace(function(dir, _, peer, text)
    seen[#seen + 1] = { dir = dir, peer = peer, text = text }
  end)
  return seen
end

local function find_all(seen, dir, pattern, peer)
  local t = {}
  for _, m in ipairs(seen) do
    if m.dir == dir and m.text:find(pattern) and (not peer or m.peer == peer) then t[#t + 1] = m end
  end
  return t
end

local function offer(port)
  return (sip.sdp.offer{ addr = "127.0.0.1", port = port })
end

---------------------------------------------------------------------------

describe("Kamailio as registrar and authenticating proxy", function()
  local kam, kport, k

  setup(function()
    k = helper.kamailio{ cfg = "registrar.cfg" }
    kam, kport = k.uri, k.port
  end)
  teardown(function()
    sip.trace(false)
    if k then k.stop() end
    helper.stop_all()
  end)
  after_each(function() sip.trace(false) end)

  -- the contacts Kamailio holds for aor: a REGISTER without Contact (10.2.3)
  local function bindings(ua, aor, user, password)
    local res = assert(ua:request("REGISTER", kam, { to = "<" .. aor .. ">", from = "<" .. aor .. ">",
                                                     auth = { user = user, password = password } }))
    assert.are.equal(200, res.status)
    return table.concat(res:headers("Contact"), ",")
  end

  it("registers with MD5 digest, refreshes, unregisters", function()
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    finally(function() ua:close() end)
    local seen = capture()
    helper.run(function()
      local aor = "sip:alice@example.com"
      local reg, err = ua:register{ registrar = kam, aor = aor, user = "alice",
                                    password = "alice-pw", expires = 2 }
      assert.is_nil(err)
      assert.are.equal("registered", reg.state)
      assert.are.equal(2, reg.expires)
      local challenges = find_all(seen, "in", "^SIP/2.0 401", "127.0.0.1:" .. kport)
      assert.are.equal(1, #challenges)
      assert.matches('WWW%-Authenticate: Digest realm="example.com"', challenges[1].text)
      local answers = find_all(seen, "out", "\nAuthorization: Digest ")
      assert.are.equal(1, #answers)
      assert.matches('username="alice"', answers[1].text)
      assert.matches("qop=auth", answers[1].text)
      -- MD5 is the default: an answer without algorithm= is MD5 too
      local alg = answers[1].text:match("algorithm=([%w%-]+)")
      assert.is_true(alg == nil or alg == "MD5", alg)
      assert.matches(ua:uri("alice"):gsub("%p", "%%%0"), bindings(ua, aor, "alice", "alice-pw"))
      -- refreshed before the 2 s run out, more than once
      assert.is_true(eventually(function() return reg.refreshes >= 2 end, 5),
                     "refreshes: " .. reg.refreshes)
      assert.are.equal("registered", reg.state)
      assert.matches(ua:uri("alice"):gsub("%p", "%%%0"), bindings(ua, aor, "alice", "alice-pw"))
      assert.is_true(reg:unregister())
      assert.are.equal("unregistered", reg.state)
      assert.is_nil(bindings(ua, aor, "alice", "alice-pw"):find(ua:uri("alice"), 1, true))
    end, 20)
  end)

  it("fails with a wrong password after one retry", function()
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    finally(function() ua:close() end)
    local seen = capture()
    helper.run(function()
      local reg, err, res = ua:register{ registrar = kam, aor = "sip:alice@example.com",
                                         user = "alice", password = "wrong", expires = 60 }
      assert.is_nil(reg)
      assert.matches("^401", err)
      assert.are.equal(401, res.status)
      sip.sleep(0.3)
      assert.are.equal(2, #find_all(seen, "out", "^REGISTER "))
      -- an unknown user fails the same way
      reg, err = ua:register{ registrar = kam, aor = "sip:mallory@example.com",
                              user = "mallory", password = "x", expires = 60 }
      assert.is_nil(reg)
      assert.matches("^401", err)
      assert.are.equal(4, #find_all(seen, "out", "^REGISTER "))
    end)
  end)

  -- alice calls bob (a Lua UA registered to Kamailio) through Kamailio;
  -- hangup(call, bob) ends the call; returns what bob saw
  local function call_through_kamailio(hangup)
    local a = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    local b = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    finally(function() a:close(); b:close() end)
    local got = {}
    b:on("INVITE", function(call)
      got.call = call
      got.from = call.invite.from
      got.rr = call.invite:header("Record-Route")
      got.source = call.invite.source
      assert(call:answer{ sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1", port = 6002 }) })
      got.why = call:wait(10)
    end)
    local seen = capture()
    local kaddr = "127.0.0.1:" .. kport
    helper.run(function()
      local reg = assert(b:register{ registrar = kam, aor = "sip:bob@example.com", user = "bob",
                                     password = "bob-pw", expires = 60 })
      local call, err, res = a:invite("sip:bob@" .. kaddr, { sdp = offer(6000), timeout = 10,
        from = "<sip:alice@example.com>", auth = { user = "alice", password = "alice-pw" } })
      assert.is_nil(err, res and res:raw())
      assert.are.equal("confirmed", call.state)
      got.caller = call
      -- bob got it from Kamailio, which asked to stay in the path
      assert.matches("alice", got.from)
      assert.are.equal(kaddr, got.source)
      assert.matches(kaddr:gsub("%p", "%%%0"), got.rr)
      hangup(call, got, seen)
      assert.is_true(reg:unregister())
    end, 30)
    return got, seen, kaddr
  end

  it("routes an INVITE through Kamailio as an authenticating proxy (407) to a registered Lua UA", function()
    local got, seen, kaddr = call_through_kamailio(function(call, got)
      assert.are.equal(6002, call.remote_sdp.media[1].port)
      assert.is_true(call:hangup())
      assert.is_true(eventually(function() return got.why ~= nil end, 5))
    end)
    -- challenged by the proxy, answered with Proxy-Authorization
    assert.are.equal(1, #find_all(seen, "in", "^SIP/2.0 407", kaddr))
    local invites = find_all(seen, "out", "^INVITE ", kaddr)
    assert.are.equal(2, #invites)
    assert.is_nil(invites[1].text:find("\nProxy%-Authorization:"))
    assert.matches('\nProxy%-Authorization: Digest username="alice"', invites[2].text)
    assert.matches('realm="example.com"', invites[2].text)
    assert.are.equal("bye", got.why)
  end)

  it("sends the caller's ACK and BYE through Kamailio's Record-Route", function()
    local got, seen, kaddr = call_through_kamailio(function(call, got, seen)
      -- give the ACK time to arrive before the BYE
      eventually(function() return #find_all(seen, "in", "^ACK ") >= 1 end, 2)
      assert.is_true(call:hangup())
      assert.is_true(eventually(function() return got.why ~= nil end, 5))
    end)
    assert.are.equal("bye", got.why)
    -- the 2xx carried Kamailio's Record-Route back to the caller
    local ok200 = find_all(seen, "in", "^SIP/2.0 200 OK\r\n.-CSeq: %d+ INVITE", kaddr)
    assert.are.equal(1, #ok200)
    assert.matches("\nRecord%-Route: [^\r\n]*" .. kaddr:gsub("%p", "%%%0"), ok200[1].text)
    -- ACK and BYE went to Kamailio with a Route, and reached bob from there
    for _, method in ipairs{ "ACK", "BYE" } do
      local out = {}
      for _, m in ipairs(find_all(seen, "out", "^" .. method .. " ", kaddr)) do
        -- the ACK of the 407 went to Kamailio as well: keep the in-dialog one
        if not m.text:find("\nCSeq: 1 ACK", 1, true) then out[#out + 1] = m end
      end
      assert.are.equal(1, #out, method .. " not sent to Kamailio")
      assert.matches("\nRoute: [^\r\n]*" .. kaddr:gsub("%p", "%%%0"), out[1].text)
      assert.are.equal(1, #find_all(seen, "in", "^" .. method .. " ", kaddr), method .. " not from Kamailio")
    end
  end)

  it("sends the callee's BYE through Kamailio's Record-Route", function()
    local _, seen, kaddr = call_through_kamailio(function(call, got)
      assert.is_true(eventually(function() return got.call.state == "confirmed" end, 3))
      assert.is_true(got.call:hangup())
      assert.are.equal("bye", call:wait(5))
    end)
    local out = find_all(seen, "out", "^BYE ", kaddr)
    assert.are.equal(1, #out, "BYE not sent to Kamailio")
    assert.matches("\nRoute: [^\r\n]*" .. kaddr:gsub("%p", "%%%0"), out[1].text)
    assert.are.equal(1, #find_all(seen, "in", "^BYE ", kaddr))
  end)
end)

---------------------------------------------------------------------------

local function start_registrar()
  local port = helper.free_port()
  local proc = helper.spawn({ root .. "/bin/luasip", root .. "/examples/registrar.lua",
                              "udp:127.0.0.1:" .. port }, "registrar")
  local uri = "sip:127.0.0.1:" .. port
  wait_ready(uri, proc, "examples/registrar.lua")
  return uri, port, proc
end

describe("examples/registrar.lua", function()
  local reg_uri, rport, rproc
  setup(function() reg_uri, rport, rproc = start_registrar() end)
  teardown(function()
    stop(rproc)
    helper.stop_all()
  end)

  local function register_req(ua, user, password, headers)
    local aor = "<sip:" .. user .. "@127.0.0.1>"
    return assert(ua:request("REGISTER", reg_uri, { to = aor, from = aor, headers = headers,
                                                    auth = { user = user, password = password } }))
  end

  local function contacts(res)
    local t = {}
    for _, v in ipairs(res:headers("Contact")) do
      for uri, params in v:gmatch("<([^>]*)>([^,]*)") do
        t[uri] = { expires = tonumber(params:match("expires=(%d+)")),
                   q = tonumber(params:match("q=([%d.]+)")) }
      end
    end
    return t
  end

  it("takes 1000 digest REGISTERs from SIPp at 200/s with 0 failed", function()
    local csv = helper.tmp .. "/register_users.csv"
    local f = assert(io.open(csv, "w"))
    f:write("SEQUENTIAL\n")
    for _, u in ipairs{ { "alice", "alice-secret" }, { "bob", "bob-secret" },
                        { "carol", "carol-secret" }, { "dave", "dave-secret" } } do
      f:write(u[1], ";[authentication username=", u[1], " password=", u[2], "];\n")
    end
    f:close()
    local sport = helper.free_port()
    local sipp = helper.sipp{ sf = "register_auth_uac.xml", port = sport,
      remote = "127.0.0.1:" .. rport,
      args = { "-inf", csv, "-m", 1000, "-r", 200, "-l", 200, "-timeout", "30",
               "-timeout_error", "-trace_err" } }
    local rc = sipp:wait(45)
    assert.are.equal(0, rc, sipp.log())
    -- the last bindings are there, with what is left of 3600 s
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    finally(function() ua:close() end)
    helper.run(function()
      for _, u in ipairs{ { "alice", "alice-secret" }, { "bob", "bob-secret" },
                          { "carol", "carol-secret" }, { "dave", "dave-secret" } } do
        local c = contacts(register_req(ua, u[1], u[2]))
        local b = c["sip:" .. u[1] .. "@127.0.0.1:" .. sport]
        assert.is_table(b, u[1])
        assert.is_true(b.expires > 3500 and b.expires <= 3600)
        -- clean up for the next tests
        local res = register_req(ua, u[1], u[2], { Contact = "*", Expires = "0" })
        assert.are.equal(0, #res:headers("Contact"))
      end
    end)
  end)

  it("keeps several contacts per user with q and expires; expires=0 and * remove", function()
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    finally(function() ua:close() end)
    helper.run(function()
      local res = register_req(ua, "carol", "carol-secret", {
        Contact = { "<sip:carol@10.0.0.1:5060>;q=0.5;expires=120", "<sip:carol@10.0.0.2:5060>" },
        Expires = "600" })
      assert.are.equal(200, res.status)
      local c = contacts(res)
      assert.are.same({ expires = 120, q = 0.5 }, c["sip:carol@10.0.0.1:5060"])
      assert.are.same({ expires = 600, q = 1 }, c["sip:carol@10.0.0.2:5060"])
      -- one header with two values, and a third contact
      res = register_req(ua, "carol", "carol-secret", {
        Contact = '"Carol" <sip:carol@10.0.0.3:5060>;q=0.7, <sip:carol@10.0.0.1:5060>;expires=300;q=0.5' })
      c = contacts(res)
      local n = 0
      for _ in pairs(c) do n = n + 1 end
      assert.are.equal(3, n)
      assert.are.equal(300, c["sip:carol@10.0.0.1:5060"].expires)
      assert.are.equal(0.7, c["sip:carol@10.0.0.3:5060"].q)
      assert.are.equal(3600, c["sip:carol@10.0.0.3:5060"].expires)   -- the default
      -- a query (no Contact) lists them all, highest q first
      res = register_req(ua, "carol", "carol-secret")
      local order = {}
      for _, v in ipairs(res:headers("Contact")) do
        for uri in v:gmatch("<([^>]*)>") do order[#order + 1] = uri end
      end
      assert.are.same({ "sip:carol@10.0.0.2:5060", "sip:carol@10.0.0.3:5060",
                        "sip:carol@10.0.0.1:5060" }, order)
      -- too brief
      res = register_req(ua, "carol", "carol-secret", { Contact = "<sip:carol@10.0.0.4:5060>",
                                                        Expires = "10" })
      assert.are.equal(423, res.status)
      assert.are.equal("60", res:header("Min-Expires"))
      -- expires=0 removes one
      res = register_req(ua, "carol", "carol-secret", { Contact = "<sip:carol@10.0.0.2:5060>;expires=0" })
      c = contacts(res)
      assert.is_nil(c["sip:carol@10.0.0.2:5060"])
      assert.is_table(c["sip:carol@10.0.0.1:5060"])
      -- * without Expires: 0 is refused; with it, all go
      res = register_req(ua, "carol", "carol-secret", { Contact = "*" })
      assert.are.equal(400, res.status)
      res = register_req(ua, "carol", "carol-secret", { Contact = "*", Expires = "0" })
      assert.are.equal(200, res.status)
      assert.are.equal(0, #res:headers("Contact"))
      -- someone else's AOR, a wrong password
      local aor = "<sip:bob@127.0.0.1>"
      res = assert(ua:request("REGISTER", reg_uri, { to = aor, from = aor,
        auth = { user = "carol", password = "carol-secret" } }))
      assert.are.equal(403, res.status)
      res = register_req(ua, "carol", "nope")
      assert.are.equal(401, res.status)
    end)
  end)

  -- alice calls bob through the registrar; bob's phones are Lua UAs
  local function phones(n, behaviour)
    local list = {}
    for i = 1, n do
      local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
      local rec = { ua = ua }
      ua:on("INVITE", function(call)
        rec.from = call.invite.from
        rec.call = call
        call:ring()
        rec.why = behaviour(i, call, rec)
      end)
      list[i] = rec
    end
    return list
  end

  local function alice_calls(a, user)
    return a:invite("sip:" .. (user or "bob") .. "@127.0.0.1:" .. rport, { sdp = offer(7000),
      timeout = 10, from = "<sip:alice@127.0.0.1>",
      auth = { user = "alice", password = "alice-secret" } })
  end

  it("answers 404 for unknown users and 480 for users with no binding", function()
    local a = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    finally(function() a:close() end)
    helper.run(function()
      local call, err, res = alice_calls(a, "zoe")
      assert.is_nil(call)
      assert.matches("^404", err)
      assert.are.equal(404, res.status)
      call, err = alice_calls(a, "dave")
      assert.is_nil(call)
      assert.matches("^480", err)
      -- callers must authenticate
      call, err = a:invite("sip:bob@127.0.0.1:" .. rport, { timeout = 5 })
      assert.is_nil(call)
      assert.matches("^407", err)
    end)
  end)

  it("bridges a call to a registered user and relays the hangup", function()
    local bob = phones(1, function(_, call)
      assert(call:answer{ sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1", port = 7002 }) })
      return call:wait(10)
    end)
    local a = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    finally(function() a:close(); bob[1].ua:close() end)
    helper.run(function()
      local reg = assert(bob[1].ua:register{ registrar = reg_uri, aor = "sip:bob@127.0.0.1",
                                             user = "bob", password = "bob-secret", expires = 300 })
      local call, err = alice_calls(a)
      assert.is_nil(err)
      assert.are.equal(7002, call.remote_sdp.media[1].port)      -- bob's answer, relayed
      assert.matches("sip:alice@", bob[1].from)
      sip.sleep(0.2)
      assert.is_true(call:hangup())
      assert.is_true(eventually(function() return bob[1].why ~= nil end, 5))
      assert.are.equal("bye", bob[1].why)
      -- and the other way: bob hangs up, alice's call ends
      bob[1].why = nil
      call = assert(alice_calls(a))
      assert.is_true(eventually(function() return bob[1].call and bob[1].call.state == "confirmed" end, 5))
      assert.is_true(bob[1].call:hangup())
      assert.are.equal("bye", call:wait(5))
      assert.is_true(reg:unregister())
    end, 30)
  end)

  it("forks to every contact: the first answer wins, the other phones stop ringing", function()
    local bob = phones(2, function(i, call)
      if i == 2 then
        sip.sleep(0.3)
        assert(call:answer())
      end
      return call:wait(8)
    end)
    local a = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    finally(function() a:close(); bob[1].ua:close(); bob[2].ua:close() end)
    helper.run(function()
      local regs = {}
      for i = 1, 2 do
        regs[i] = assert(bob[i].ua:register{ registrar = reg_uri, aor = "sip:bob@127.0.0.1",
                                             user = "bob", password = "bob-secret", expires = 300 })
      end
      local call, err = alice_calls(a)
      assert.is_nil(err)
      assert.is_truthy(bob[1].call, "bob's first phone never rang")
      assert.is_true(eventually(function() return bob[2].call.state == "confirmed" end, 3))
      -- the phone that did not answer is cancelled (it must not ring on)
      assert.is_true(eventually(function() return bob[1].why ~= nil end, 3),
                     "bob's first phone still ringing after the second answered")
      assert.are.equal("cancel", bob[1].why)
      assert.is_true(call:hangup())
      assert.is_true(eventually(function() return bob[2].why ~= nil end, 5))
      for i = 1, 2 do regs[i]:unregister() end
    end, 30)
  end)
end)
