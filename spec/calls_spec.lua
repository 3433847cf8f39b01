--- Calls between two user agents in one process: answer and hangup both
-- ways, reject, timeout with CANCEL, hold and unhold both ways, in-dialog
-- requests, the re-INVITE hook, handlers that raise, cleanup (no call,
-- dialog or transaction left) and a UA closed with a call still up.
local sip = require "sip"
local helper = require "helper"

local T1 = 0.01   -- Timers D, J, H ... are 64*T1: transactions end in 0.64 s

-- two UAs on loopback: a calls, b answers
local function pair(tr)
  tr = tr or "udp"
  local a = assert(sip.ua{ listen = tr .. ":127.0.0.1:0", t1 = T1, t2 = 0.04, t4 = 0.05 })
  local b = assert(sip.ua{ listen = tr .. ":127.0.0.1:0", t1 = T1, t2 = 0.04, t4 = 0.05 })
  return a, b
end

local function offer(port, direction)
  return (sip.sdp.offer{ addr = "127.0.0.1", port = port or 4000, direction = direction })
end

local function dir_of(sdp_table)
  return sdp_table and sdp_table.media[1] and sdp_table.media[1].direction
end

-- every call, dialog and transaction gone (Timer J, D ... with small T1)
local function assert_clean(...)
  for _, ua in ipairs{ ... } do
    local idle, st = helper.idle(ua, 5)
    assert.is_true(idle, "transactions left: " .. tostring(st and st.transactions))
    -- a failed outgoing call lives as long as its INVITE transaction
    -- (Timer D: a late 2xx still gets its ACK and BYE), not longer
    local s = ua:stats()
    assert.are.equal(0, s.calls, "calls left")
    assert.are.equal(0, s.dialogs, "dialogs left")
    assert.are.equal(0, s.pending_requests, "pending requests left")
  end
end

describe("calls between two Lua UAs", function()
  for _, tr in ipairs{ "udp", "tcp" } do
    it("are answered with SDP and hung up by the caller (" .. tr .. ")", function()
      local a, b = pair(tr)
      finally(function() a:close(); b:close() end)
      local seen = {}
      b:on("INVITE", function(call)
        seen.state0 = call.state
        seen.uas = call.uas
        seen.from, seen.to, seen.call_id = call.from, call.to, call.call_id
        seen.method = call.invite.method
        assert(call:ring())
        seen.state1 = call.state
        local ans = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1", port = 5000,
                                                        codecs = { "PCMA" } })
        seen.answer = { call:answer{ sdp = ans } }
        seen.state2 = call.state
        seen.remote_sdp = call.remote_sdp
        seen.why = call:wait(10)
        seen.ended = call.state
      end)
      helper.run(function()
        local provisional = {}
        local my_offer = offer(4000)
        local call, err, res = a:invite(b:uri("bob"), { sdp = my_offer, timeout = 5,
          headers = { ["X-Test"] = "1" },
          on_provisional = function(r) provisional[#provisional + 1] = r.status end })
        assert.is_nil(err)
        assert.is_nil(res)
        assert.is_false(call.uas)
        assert.are.equal("confirmed", call.state)
        assert.is_string(call.local_tag)
        assert.is_string(call.remote_tag)
        assert.are.equal("INVITE", call.invite.method)
        assert.are.equal("1", call.invite:header("X-Test"))
        -- the answer picked PCMA, the one codec both have
        assert.are.equal("PCMA", call.remote_sdp.media[1].codecs[1].name)
        assert.are.equal(5000, call.remote_sdp.media[1].port)
        assert.are.equal(my_offer, call.local_sdp)
        sip.sleep(0.05)
        assert.are.same({ true }, seen.answer)
        assert.are.equal("confirmed", seen.state2)
        assert.is_true(call:hangup())
        assert.are.equal("ended", call.state)
        assert.are.equal("hangup", call.ended_why)
        sip.sleep(0.05)
        assert.truthy(provisional[#provisional] == 180)
        assert.are.equal(call.call_id, seen.call_id)
      end, 15)
      assert.are.equal("incoming", seen.state0)
      assert.is_true(seen.uas)
      assert.are.equal("early", seen.state1)
      assert.are.equal("INVITE", seen.method)
      assert.truthy(seen.to:find("bob@", 1, true))
      assert.are.equal("sendrecv", dir_of(seen.remote_sdp))
      assert.are.equal("bye", seen.why)
      assert.are.equal("ended", seen.ended)
      assert_clean(a, b)
    end)
  end

  it("are hung up by the callee: the caller's wait returns \"bye\"", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    local hung
    b:on("INVITE", function(call)
      assert(call:answer{ sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1" }) })
      sip.sleep(0.1)
      hung = { call:hangup() }
    end)
    helper.run(function()
      local call = assert(a:invite(b:uri("bob"), { sdp = offer(), timeout = 5 }))
      local why = call:wait(5)
      assert.are.equal("bye", why)
      assert.are.equal("ended", call.state)
      assert.are.equal("bye", call.ended_why)
      -- waiting again on an ended call returns at once
      assert.are.equal("bye", call:wait())
      -- hanging up an ended call is harmless
      assert.is_true(call:hangup())
      sip.sleep(0.05)
    end, 10)
    assert.are.same({ true }, hung)
    assert_clean(a, b)
  end)

  it("are rejected: nil, \"486 Busy Here\", the response", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    local callee
    b:on("INVITE", function(call)
      callee = call
      call:ring()
      assert(call:reject(486))
    end)
    helper.run(function()
      local call, err, res = a:invite(b:uri("bob"), { sdp = offer(), timeout = 5 })
      assert.is_nil(call)
      assert.are.equal("486 Busy Here", err)
      assert.are.equal(486, res.status)
      assert.are.equal("INVITE", res.cseq_method)
      sip.sleep(0.05)
    end, 10)
    assert.are.equal("ended", callee.state)
    assert.are.equal("rejected", callee.ended_why)
    assert_clean(a, b)
  end)

  it("are rejected with a status and reason returned by the handler", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    b:on("INVITE", function() return 603, "Not Today" end)
    helper.run(function()
      local call, err, res = a:invite(b:uri("bob"), { sdp = offer(), timeout = 5 })
      assert.is_nil(call)
      assert.are.equal("603 Not Today", err)
      assert.are.equal(603, res.status)
    end, 10)
    assert_clean(a, b)
  end)

  it("time out: the caller CANCELs, gets nil, \"timeout\"; the callee's wait returns \"cancel\"", function()
    local a, b = pair()
    finally(function() a:close(); b:close(); sip.trace(false) end)
    local why, answered, state
    b:on("INVITE", function(call)
      call:ring()
      why = call:wait(10)
      state = call.state
      answered = { call:answer() }
    end)
    local cancels, r487 = 0, 0
    sip.trace(function(dir, _, _, text)
      if dir == "out" and text:match("^CANCEL ") then cancels = cancels + 1 end
      if dir == "out" and text:match("^SIP/2%.0 487 ") then r487 = r487 + 1 end
    end)
    helper.run(function()
      sip.sleep(0.01)
      local t0 = sip.now()
      local call, err, res = a:invite(b:uri("bob"), { sdp = offer(), timeout = 0.3 })
      assert.is_nil(call)
      assert.are.equal("timeout", err)
      assert.is_nil(res)
      assert.is_near(0.3, sip.now() - t0, 0.15)
      sip.sleep(0.2)
    end, 10)
    assert.are.equal("cancel", why)
    assert.are.equal("ended", state)
    assert.is_nil(answered[1])
    assert.are.equal(1, cancels)
    assert.are.equal(1, r487)
    assert_clean(a, b)
  end)

  it("fail at once with a transport error when nobody listens (udp, with and without SDP)", function()
    local a = assert(sip.ua{ listen = "udp:127.0.0.1:0", t1 = T1 })
    finally(function() a:close() end)
    local port = helper.free_port()
    helper.run(function()
      for _, sdp in ipairs{ false, true } do
        local t0 = sip.now()
        -- an INVITE with an offer is longer than the copy an ICMP error
        -- carries back (576 bytes): it must be matched all the same
        local call, err = a:invite("sip:bob@127.0.0.1:" .. port,
                                   { sdp = sdp and offer() or nil, timeout = 3 })
        assert.is_nil(call)
        assert.are.equal("transport: connection refused", err,
                         (sdp and "with" or "without") .. " SDP")
        assert.is_true(sip.now() - t0 < 1)
      end
    end, 10)
  end)

  it("hold and unhold from the caller: sendonly offer, recvonly answer", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    local callee, why
    b:on("INVITE", function(call)
      callee = call
      assert(call:answer{ sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1", port = 5000 }) })
      why = call:wait(10)
    end)
    helper.run(function()
      local call = assert(a:invite(b:uri("bob"), { sdp = offer(4000), timeout = 5 }))
      local v0 = tonumber(call.local_sdp:match("o=%S+ %S+ (%d+)"))
      local res, err = call:hold()
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      assert.are.equal("sendonly", sip.sdp.parse(call.local_sdp).media[1].direction)
      assert.are.equal("recvonly", dir_of(call.remote_sdp))
      assert.are.equal("sendonly", dir_of(callee.remote_sdp))
      assert.are.equal("recvonly", dir_of(sip.sdp.parse(callee.local_sdp)))
      -- same session, a new version
      local v1 = tonumber(call.local_sdp:match("o=%S+ %S+ (%d+)"))
      assert.is_true(v1 > v0)
      -- the callee's answers keep their port and count their versions too
      local cv1 = tonumber(callee.local_sdp:match("o=%S+ %S+ (%d+)"))

      res, err = call:unhold()
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      assert.are.equal("sendrecv", dir_of(sip.sdp.parse(call.local_sdp)))
      assert.are.equal("sendrecv", dir_of(call.remote_sdp))
      assert.are.equal("sendrecv", dir_of(callee.remote_sdp))
      assert.are.equal(5000, call.remote_sdp.media[1].port)
      assert.is_true(tonumber(callee.local_sdp:match("o=%S+ %S+ (%d+)")) > cv1)
      assert.is_true(call:hangup())
      sip.sleep(0.05)
    end, 10)
    assert.are.equal("bye", why)
    assert_clean(a, b)
  end)

  it("hold and unhold from the callee", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    local results = {}
    b:on("INVITE", function(call)
      assert(call:answer{ sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1", port = 5000 }) })
      local res, err = call:hold()
      results.hold = { status = res and res.status, err = err, ours = dir_of(sip.sdp.parse(call.local_sdp)),
                       theirs = dir_of(call.remote_sdp) }
      res, err = call:unhold()
      results.unhold = { status = res and res.status, err = err, ours = dir_of(sip.sdp.parse(call.local_sdp)),
                         theirs = dir_of(call.remote_sdp) }
      assert(call:hangup())
    end)
    helper.run(function()
      local call = assert(a:invite(b:uri("bob"), { sdp = offer(4000), timeout = 5 }))
      local dirs = {}
      call:on("reinvite", function(c, req)
        dirs[#dirs + 1] = dir_of(sip.sdp.parse(req.body))
        -- nil: the default answer, mirrored
      end)
      assert.are.equal("bye", call:wait(5))
      assert.are.same({ "sendonly", "sendrecv" }, dirs)
      sip.sleep(0.05)
    end, 10)
    assert.are.same({ status = 200, ours = "sendonly", theirs = "recvonly" }, results.hold)
    assert.are.same({ status = 200, ours = "sendrecv", theirs = "sendrecv" }, results.unhold)
    assert_clean(a, b)
  end)

  it("hold when the peer already holds us offers inactive", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    local callee_dir
    b:on("INVITE", function(call)
      assert(call:answer{ sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1" }) })
      assert(call:hold())
      sip.sleep(0.1)
      callee_dir = dir_of(call.remote_sdp)
      call:wait(5)
    end)
    helper.run(function()
      local call = assert(a:invite(b:uri("bob"), { sdp = offer(), timeout = 5 }))
      sip.sleep(0.05)
      assert.are.equal("sendonly", dir_of(call.remote_sdp))
      local res, err = call:hold()
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      assert.are.equal("inactive", dir_of(sip.sdp.parse(call.local_sdp)))
      assert.are.equal("inactive", dir_of(call.remote_sdp))
      sip.sleep(0.1)
      assert(call:hangup())
      sip.sleep(0.05)
    end, 10)
    assert.are.equal("inactive", callee_dir)
    assert_clean(a, b)
  end)

  it("carry INFO, MESSAGE and OPTIONS in the dialog, with hooks", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    local infos = {}
    b:on("INVITE", function(call)
      call:on("info", function(c, req)
        infos[#infos + 1] = { body = req.body, ctype = req.content_type, method = req.method,
                              same = c == call }
        if req.body == "Signal=#" then return 488, "Not That" end
      end)
      assert(call:answer())
      call:wait(10)
    end)
    helper.run(function()
      local call = assert(a:invite(b:uri("bob"), { sdp = offer(), timeout = 5 }))
      local res, err = call:request("INFO", { body = "Signal=5\r\nDuration=160\r\n",
                                              content_type = "application/dtmf-relay" })
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      assert.are.equal("INFO", res.cseq_method)
      res = assert(call:request("INFO", { body = "Signal=#", content_type = "application/dtmf-relay" }))
      assert.are.equal(488, res.status)
      assert.are.equal("Not That", res.reason)
      -- no hook: the defaults
      res = assert(call:request("OPTIONS"))
      assert.are.equal(200, res.status)
      res = assert(call:request("MESSAGE", { body = "hi", content_type = "text/plain" }))
      assert.are.equal(200, res.status)
      res = assert(call:request("SUBSCRIBE", { headers = { Event = "dialog" } }))
      assert.are.equal(405, res.status)
      -- the CSeq counts up in the dialog
      assert.is_true(res.cseq > 2)
      assert.has_error(function() call:request("ACK") end)
      assert.has_error(function() call:request("bad method") end)
      assert(call:hangup())
      -- no dialog any more
      local r2, e2 = call:request("INFO")
      assert.is_nil(r2)
      assert.is_string(e2)
      sip.sleep(0.05)
    end, 10)
    assert.are.equal(2, #infos)
    assert.are.same({ body = "Signal=5\r\nDuration=160\r\n", ctype = "application/dtmf-relay",
                      method = "INFO", same = true }, infos[1])
    assert_clean(a, b)
  end)

  it("let a reinvite hook see the offer and accept it with the default answer", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    local seen = {}
    b:on("INVITE", function(call)
      call:on("reinvite", function(c, req)
        seen[#seen + 1] = { method = req.method, dir = dir_of(sip.sdp.parse(req.body)),
                            state = c.state }
        sip.sleep(0.02)   -- a hook may block
      end)
      assert(call:answer{ sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1" }) })
      call:wait(10)
    end)
    helper.run(function()
      local call = assert(a:invite(b:uri("bob"), { sdp = offer(), timeout = 5 }))
      local res = assert(call:hold())
      assert.are.equal(200, res.status)
      assert.are.equal("recvonly", dir_of(call.remote_sdp))
      -- a new offer of our own: another port
      local text = sip.sdp.offer{ addr = "127.0.0.1", port = 4100 }
      res = assert(call:reinvite{ sdp = text })
      assert.are.equal(200, res.status)
      assert.are.equal(text, call.local_sdp)
      assert.are.equal("sendrecv", dir_of(call.remote_sdp))
      assert(call:hangup())
      sip.sleep(0.05)
    end, 10)
    assert.are.same({ { method = "INVITE", dir = "sendonly", state = "confirmed" },
                      { method = "INVITE", dir = "sendrecv", state = "confirmed" } }, seen)
    assert_clean(a, b)
  end)

  it("let a reinvite hook decline with a status, or answer itself", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    local n = 0
    b:on("INVITE", function(call)
      call:on("reinvite", function(c, req)
        n = n + 1
        if n == 1 then return 488 end
        if n == 2 then return 491, "Glare" end
        -- answer ourselves, with our own SDP
        local ans = sip.sdp.answer(req.body, { addr = "127.0.0.1", port = 6000, direction = "inactive" })
        req:reply(200, nil, { body = ans, content_type = "application/sdp" })
      end)
      assert(call:answer{ sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1" }) })
      call:wait(10)
    end)
    helper.run(function()
      local call = assert(a:invite(b:uri("bob"), { sdp = offer(), timeout = 5 }))
      local before = call.local_sdp
      local res, err, r = call:hold()
      assert.is_nil(res)
      assert.are.equal("488 Not Acceptable Here", err)
      assert.are.equal(488, r.status)
      -- a declined offer changes nothing
      assert.are.equal(before, call.local_sdp)
      res, err = call:reinvite{ sdp = offer(4002) }
      assert.is_nil(res)
      assert.are.equal("491 Glare", err)
      res = assert(call:reinvite{ sdp = offer(4004) })
      assert.are.equal(200, res.status)
      assert.are.equal(6000, call.remote_sdp.media[1].port)
      assert.are.equal("inactive", dir_of(call.remote_sdp))
      -- the call survives all that
      res = assert(call:request("INFO"))
      assert.are.equal(200, res.status)
      assert(call:hangup())
      sip.sleep(0.05)
    end, 10)
    assert.are.equal(3, n)
    assert_clean(a, b)
  end)

  it("answer 500 when a handler or a hook raises", function()
    local a, b = pair()
    finally(function() a:close(); b:close(); sip.log("error", false) end)
    local logged = {}
    sip.log("error", function(level, msg) logged[#logged + 1] = msg end)
    local calls = 0
    b:on("INVITE", function(call)
      calls = calls + 1
      if calls == 1 then error("boom in the INVITE handler") end
      call:on("reinvite", function() error("boom in the reinvite hook") end)
      call:on("info", function() error("boom in the info hook") end)
      assert(call:answer())
      call:wait(10)
    end)
    helper.run(function()
      local call, err, res = a:invite(b:uri("bob"), { sdp = offer(), timeout = 5 })
      assert.is_nil(call)
      assert.are.equal(500, res and res.status)
      assert.truthy(err:match("^500 "))
      call = assert(a:invite(b:uri("bob"), { sdp = offer(), timeout = 5 }))
      local r, e, rr = call:hold()
      assert.is_nil(r)
      assert.truthy(e:match("^500 "))
      assert.are.equal(500, rr.status)
      local ri = assert(call:request("INFO"))
      assert.are.equal(500, ri.status)
      assert(call:hangup())
      sip.sleep(0.05)
    end, 10)
    local all = table.concat(logged, "\n")
    assert.truthy(all:find("boom in the INVITE handler", 1, true))
    assert.truthy(all:find("boom in the reinvite hook", 1, true))
    assert.truthy(all:find("boom in the info hook", 1, true))
    assert_clean(a, b)
  end)

  it("answer a handler that returns without answering with 480", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    b:on("INVITE", function(call) call:ring() end)
    helper.run(function()
      local call, err, res = a:invite(b:uri("bob"), { sdp = offer(), timeout = 5 })
      assert.is_nil(call)
      assert.are.equal(480, res.status)
      assert.truthy(err:match("^480 "))
    end, 10)
    assert_clean(a, b)
  end)

  it("answer an offer with a valid SDP when the script gives none", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    b:on("INVITE", function(call)
      assert(call:answer())
      call:wait(10)
    end)
    helper.run(function()
      local call = assert(a:invite(b:uri("bob"), { sdp = offer(), timeout = 5 }))
      assert.is_table(call.remote_sdp)
      assert.are.equal("inactive", dir_of(call.remote_sdp))
      assert.are.equal(1, #call.remote_sdp.media)
      assert(call:hangup())
      -- and an INVITE without an offer gets one in the 200
      call = assert(a:invite(b:uri("bob"), { timeout = 5 }))
      assert.is_table(call.remote_sdp)
      assert.are.equal(1, #call.remote_sdp.media)
      assert(call:hangup())
      sip.sleep(0.05)
    end, 10)
    assert_clean(a, b)
  end)

  it("leave no call, dialog or transaction behind after many calls", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    local ended = 0
    b:on("INVITE", function(call)
      call:ring()
      assert(call:answer{ sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1" }) })
      if call:wait(10) == "bye" then ended = ended + 1 end
    end)
    helper.run(function()
      local done = 0
      for _ = 1, 10 do
        sip.spawn(function()
          for _ = 1, 5 do
            local call = assert(a:invite(b:uri("bob"), { sdp = offer(), timeout = 5 }))
            assert(call:request("INFO"))
            assert(call:hangup())
          end
          done = done + 1
        end)
      end
      local deadline = sip.now() + 10
      while done < 10 and sip.now() < deadline do sip.sleep(0.02) end
      assert.are.equal(10, done)
      local sa = a:stats()
      assert.are.equal(0, sa.calls)
      assert.are.equal(0, sa.dialogs)
      sip.sleep(0.05)
    end, 20)
    assert.are.equal(50, ended)
    assert_clean(a, b)
  end)

  it("send BYE for a call left open when the UA closes: the peer's wait returns \"bye\"", function()
    local a, b = pair()
    finally(function() a:close(); b:close(); sip.trace(false) end)
    local why
    b:on("INVITE", function(call)
      assert(call:answer())
      why = call:wait(10)
    end)
    local byes = 0
    sip.trace(function(dir, _, _, text)
      if dir == "out" and text:match("^BYE ") then byes = byes + 1 end
    end)
    helper.run(function()
      local call = assert(a:invite(b:uri("bob"), { sdp = offer(), timeout = 5 }))
      assert.are.equal("confirmed", call.state)
      sip.sleep(0.05)
      a:close()
      local deadline = sip.now() + 2
      while not why and sip.now() < deadline do sip.sleep(0.02) end
    end, 10)
    assert.are.equal("bye", why)
    assert.are.equal(1, byes)
    assert.are.equal(0, b:stats().calls)
    assert.are.equal(0, b:stats().dialogs)
    assert.is_true((helper.idle(b, 5)))
  end)

  it("send BYE for a call the callee left open when its UA closes", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    b:on("INVITE", function(call)
      assert(call:answer())
      call:wait(30)
    end)
    helper.run(function()
      local call = assert(a:invite(b:uri("bob"), { sdp = offer(), timeout = 5 }))
      sip.sleep(0.05)
      b:close()
      assert.are.equal("bye", call:wait(3))
      sip.sleep(0.05)
    end, 10)
    assert_clean(a)
  end)
end)
