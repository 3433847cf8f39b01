--- What a new user tripped on (issue "What a new user trips on"): each
-- describe is named after the bug it pins.
local sip = require "sip"
local helper = require "helper"

local raises = helper.raises

local ua = helper.uas(after_each)

local OFFER = sip.sdp.offer{ addr = "127.0.0.1", port = 4000, codecs = { "PCMU" } }

describe("ua:events() after its first loop ended", function()
  it("a second and third loop still see MESSAGEs and INVITEs", function()
    local a, b = ua(), ua()
    helper.run(function()
      -- first loop: times out with nothing
      for _ in a:events(0.1) do error("no event expected") end
      -- second loop: a MESSAGE, then break
      sip.spawn(function()
        b:request("MESSAGE", a:uri("x"), { body = "one", timeout = 5 })
      end)
      local ev = a:events(5)()            -- one event, then the loop is left
      assert.are.equal("MESSAGE", ev.method)
      assert.are.equal("one", ev.request.body)
      ev.request:reply(200)
      -- third loop: an INVITE
      local placed
      sip.spawn(function()
        local call = b:invite(a:uri("x"), { sdp = OFFER, timeout = 5 })
        placed = call and call.state
        if call then call:hangup() end
      end)
      ev = a:events(5)()
      assert.are.equal("call_invite", ev.type)
      assert.is_true(ev.call:answer())
      sip.sleep(0.2)
      assert.are.equal("confirmed", placed)
      -- a MESSAGE that arrives between loops waits for the next one
      local res
      sip.spawn(function() res = b:request("MESSAGE", a:uri("x"), { body = "two", timeout = 5 }) end)
      sip.sleep(0.1)
      ev = a:events(5)()
      assert.are.equal("two", ev.request.body)
      ev.request:reply(202)
      sip.sleep(0.1)
      assert.are.equal(202, res.status)
    end)
  end)

  it("a loop in a coroutine works beside handlers of the same UA", function()
    local a, b = ua(), ua()
    a:on("OPTIONS", function() return 200 end)
    helper.run(function()
      local got
      sip.spawn(function()
        local ev = a:events(5)()
        got = ev.method
        ev.request:reply(200)
      end)
      local r1 = assert(b:request("OPTIONS", a:uri(), { timeout = 5 }))
      local r2 = assert(b:request("MESSAGE", a:uri(), { body = "x", timeout = 5 }))
      assert.are.equal(200, r1.status)
      assert.are.equal(200, r2.status)
      assert.are.equal("MESSAGE", got)
    end)
  end)
end)

describe("a Contact given by the script was sent as a second Contact", function()
  it("replaces ours in INVITE, re-INVITE and requests; sip.ua{contact} sets the default", function()
    local a = ua()
    local b = ua{ listen = "udp:127.0.0.1:0", contact = "<sip:me@192.0.2.7:5070>" }
    local seen = {}
    a:on("INVITE", function(call)
      seen[#seen + 1] = call.invite:headers("Contact")
      call:on("reinvite", function(_, req) seen[#seen + 1] = req:headers("Contact") end)
      call:answer()
      call:wait()
    end)
    a:on("SUBSCRIBE", function(sub) seen[#seen + 1] = sub.request:headers("Contact"); return 489 end)
    helper.run(function()
      local call = assert(b:invite(a:uri(), { sdp = OFFER, timeout = 5,
                                             headers = { Contact = "<sip:given@10.1.2.3>" } }))
      assert(call:reinvite{ contact = "<sip:moved@10.1.2.4>" })
      call:hangup()
      local call2 = assert(b:invite(a:uri(), { sdp = OFFER, timeout = 5 }))
      call2:hangup()
      b:request("SUBSCRIBE", a:uri(), { headers = { Event = "presence" }, contact = "<sip:opt@10.1.2.5>",
                                        timeout = 5 })
    end)
    assert.are.same({ "<sip:given@10.1.2.3>" }, seen[1])
    assert.are.same({ "<sip:moved@10.1.2.4>" }, seen[2])
    assert.are.same({ "<sip:me@192.0.2.7:5070>" }, seen[3])
    assert.are.same({ "<sip:opt@10.1.2.5>" }, seen[4])
  end)

  it("the 200 of a UA with its own contact names it", function()
    local a = ua{ listen = "udp:127.0.0.1:0", contact = "<sip:pub@198.51.100.9:5060>" }
    local b = ua()
    a:on("INVITE", function(call) call:answer(); call:wait() end)
    helper.run(function()
      local call = assert(b:invite(a:uri(), { sdp = OFFER, timeout = 5 }))
      assert.are.same({ "<sip:pub@198.51.100.9:5060>" }, call.response:headers("Contact"))
      -- the BYE goes to that (unreachable) target: do not wait for it
      call:_end()
    end)
  end)
end)

describe("unknown or mistyped options were silently ignored", function()
  it("raise, naming the public function and the option", function()
    local a = ua()
    local b = ua()
    local answer_err
    b:on("INVITE", function(call)
      local ok, err = pcall(call.answer, call, { spd = OFFER })
      answer_err = not ok and err
      call:reject(603)
    end)
    helper.run(function() a:invite(b:uri(), { sdp = OFFER, timeout = 5 }) end)
    assert.matches("'call:answer' %(unknown option 'spd'%)", answer_err)
    raises("'ua:request' %(unknown option 'bdy'%)", a.request, a, "MESSAGE", "sip:x@127.0.0.1:9", { bdy = "x" })
    raises("'ua:request' %(option 'timeout' must be a number, got string%)",
           a.request, a, "MESSAGE", "sip:x@127.0.0.1:9", { timeout = "5" })
    raises("'ua:invite' %(unknown option 'timout'%)", a.invite, a, "sip:x@127.0.0.1:9", { timout = 5 })
    raises("'sip.ua' %(unknown option 'lisen'%)", sip.ua, { lisen = "udp:127.0.0.1:0" })
    raises("'sip.ua' %(option 't1' must be a number", sip.ua, { t1 = "0.5" })
    raises("'ua:register' %(unknown option 'expire'%)", a.register, a,
           { registrar = "sip:127.0.0.1:9", aor = "sip:a@127.0.0.1", expire = 60 })
  end)

  it("req:reply with an unknown option raises, naming it", function()
    local a, b = ua(), ua()
    local err
    a:on("MESSAGE", function(req)
      local ok, e = pcall(req.reply, req, 200, nil, { bdy = "x" })
      err = not ok and e
      return 200
    end)
    helper.run(function() b:request("MESSAGE", a:uri(), { body = "x", timeout = 5 }) end)
    assert.matches("'req:reply' %(unknown option 'bdy'%)", err)
  end)
end)

describe("call:request(\"BYE\") left the call confirmed", function()
  it("raises and points at call:hangup()", function()
    local a, b = ua(), ua()
    a:on("INVITE", function(call) call:answer(); call:wait() end)
    helper.run(function()
      local call = assert(b:invite(a:uri(), { sdp = OFFER, timeout = 5 }))
      local ok, err = pcall(call.request, call, "BYE")
      assert.is_false(ok)
      assert.matches("call:hangup", err)
      assert.are.equal("confirmed", call.state)
      assert.is_true(call:hangup())
      assert.are.equal("ended", call.state)
    end)
  end)
end)

describe("error messages named private functions", function()
  it("name the public function and point at the caller's line", function()
    local a = ua()
    local err = raises("'ua:request'", a.request, a, "MESSAGE", "not a uri", {})
    assert.not_matches("_request", err)
    err = raises("ua:invite", function() return a.invite(42, "sip:x@127.0.0.1") end)
    assert.not_matches("_invite", err)
    -- the caller's line: this file
    local ok, e = pcall(function() a:request("MESSAGE", "sip:x@127.0.0.1:9", { bdy = 1 }) end)
    assert.is_false(ok)
    assert.matches("newuser_spec%.lua:%d+:", e)
    a:close()
    err = raises("'ua:on' %(the user agent is closed%)", a.on, a, "OPTIONS", function() end)
    assert.not_matches("index a nil", err)
  end)

  it("call:reject with a bad reason names call:reject", function()
    local a, b = ua(), ua()
    local err
    a:on("INVITE", function(call)
      local ok, e = pcall(call.reject, call, 486, 42)
      err = not ok and e
      call:reject(486)
    end)
    helper.run(function() b:invite(a:uri(), { sdp = OFFER, timeout = 5 }) end)
    assert.matches("'call:reject'", err)
    assert.not_matches("_reply", err)
  end)
end)

describe("sip.Call and sip.Registration had no __close", function()
  it("local call <close> hangs up at the end of its scope", function()
    local a, b = ua(), ua()
    local why
    a:on("INVITE", function(call) call:answer(); why = call:wait(5) end)
    helper.run(function()
      do
        local call <close> = assert(b:invite(a:uri(), { sdp = OFFER, timeout = 5 }))
        assert.are.equal("confirmed", call.state)
      end
      sip.sleep(0.2)
      assert.are.equal("bye", why)
    end)
  end)

  it("closing an ended call, twice, does nothing", function()
    local a, b = ua(), ua()
    a:on("INVITE", function(call) call:answer(); call:wait(5) end)
    helper.run(function()
      local call = assert(b:invite(a:uri(), { sdp = OFFER, timeout = 5 }))
      call:hangup()
      getmetatable(call).__close(call)
      getmetatable(call).__close(call)
      assert.are.equal("ended", call.state)
    end)
  end)
end)

describe("sip.sdp.answer with no codec in common answered port 0", function()
  it("returns nil, \"no common codec\"", function()
    local offer = sip.sdp.offer{ addr = "127.0.0.1", codecs = { "G729" } }
    local text, err = sip.sdp.answer(offer, { addr = "127.0.0.1", codecs = { "PCMU" } })
    assert.is_nil(text)
    assert.are.equal("no common codec", err)
  end)

  it("the default answer of such an INVITE is 488 with a Warning", function()
    local a, b = ua(), ua()
    local answered
    a:on("INVITE", function(call) answered = { call:answer() } end)
    helper.run(function()
      local offer = sip.sdp.offer{ addr = "127.0.0.1", codecs = { "GSM" } }:gsub("GSM/8000", "X-UNKNOWN/8000")
      local call, err, res = b:invite(a:uri(), { sdp = offer, timeout = 5 })
      assert.is_nil(call)
      assert.matches("^488", err)
      assert.matches('^305 .* "Incompatible media format"$', res:header("Warning"))
    end)
    assert.are.same({ nil, "no common codec" }, answered)
  end)
end)

describe("options inside sip.ua's tls table were not checked", function()
  it("an unknown one raises naming it, and key without cert names sip.ua", function()
    raises("'sip.ua' %(unknown option 'cetr'%)", sip.ua, { tls = { cetr = "x" } })
    raises("'sip.ua' %(option 'tls.key' needs 'tls.cert'%)", sip.ua, { tls = { key = "k.pem" } })
  end)
end)

describe("ua:register ignored sip.ua{contact}", function()
  it("binds the UA's contact when the registration names none", function()
    local registrar = ua()
    local b = ua{ listen = "udp:127.0.0.1:0", contact = "<sip:me@192.0.2.7:5070>" }
    local bound
    registrar:on("REGISTER", function(req)
      bound = bound or req:header("Contact")
      req:reply(200, nil, { headers = { Contact = req:header("Contact") .. ";expires=60" } })
    end)
    helper.run(function()
      local reg = assert(b:register{ registrar = registrar:uri(), aor = "sip:me@127.0.0.1" })
      assert.are.equal("registered", reg.state)
      assert(reg:unregister())
    end)
    assert.are.equal("<sip:me@192.0.2.7:5070>", bound)
  end)
end)

describe("a request sent after the loop paused longer than T1 went out twice", function()
  it("goes out once: its timers count from when it is sent", function()
    local a, b = ua(), ua()
    local seen = 0
    a:on("OPTIONS", function() seen = seen + 1; return 200 end)
    helper.run(function() sip.sleep(0.01) end)
    -- the loop does not run for 1.2 s (a long computation, a slow start)
    local till = os.clock() + 1.2
    repeat until os.clock() >= till
    helper.run(function()
      assert.are.equal(200, b:request("OPTIONS", a:uri(), { timeout = 5 }).status)
      sip.sleep(0.3)
    end)
    assert.are.equal(1, seen)
    assert.are.equal(0, b:stats().retransmissions)
  end)
end)
