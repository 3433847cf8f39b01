--- Reliable provisional responses and PRACK (RFC 3262), both sides:
-- luasip calling luasip with reliable 180 and 183 (early media, an offer
-- in the 183 answered by the PRACK, one reliable 1xx at a time, the 2xx
-- held back until the PRACK of a 183 with SDP), a raw peer that loses
-- PRACKs (resends, then 500 after 64*T1), PRACKs that match nothing
-- (481), copies and out-of-order RSeqs ignored by our UAC, and SIPp on
-- either side. Over UDP any message may come more than once: the checks
-- take every legal copy and look at distinct messages, never at times.
local sip = require "sip"
local helper = require "helper"

local T1 = 0.05   -- 64*T1 = 3.2 s: the no-PRACK deadline stays short

local function pair(tr)
  tr = tr or "udp"
  local opts = { listen = tr .. ":127.0.0.1:0", t1 = T1, t2 = 0.2, t4 = 0.2 }
  return assert(sip.ua(opts)), assert(sip.ua(opts))
end

local function offer(port)
  return (sip.sdp.offer{ addr = "127.0.0.1", port = port or 4000 })
end

-- every message the process sends and receives, in order
local function record()
  local log = {}
  sip.trace(function(dir, _, _, text)
    log[#log + 1] = { dir = dir, text = text, first = text:match("^[^\r\n]*") }
  end)
  return log
end

local function cseq_of(text)
  local n, m = text:match("\n[Cc][Ss][Ee][Qq]:%s*(%d+)%s+(%u+)")
  return tonumber(n), m
end

local function header(text, name)
  return text:match("\n" .. name .. ":%s*([^\r\n]*)")
end

-- the distinct texts of the messages that match (copies are one)
local function distinct(log, dir, pattern, method)
  local out, seen = {}, {}
  for _, m in ipairs(log) do
    if m.dir == dir and m.first:match(pattern) and not seen[m.text] then
      local _, cm = cseq_of(m.text)
      if not method or cm == method then
        seen[m.text] = true
        out[#out + 1] = m.text
      end
    end
  end
  return out
end

-- the position of the first message that matches
local function first_index(log, dir, pattern, method)
  for i, m in ipairs(log) do
    local _, cm = cseq_of(m.text)
    if m.dir == dir and m.first:match(pattern) and (not method or cm == method) then return i end
  end
end

local function ladder(log)
  local out = {}
  for _, m in ipairs(log) do out[#out + 1] = (m.dir == "out" and "--> " or "<-- ") .. m.first end
  return table.concat(out, "\n")
end

-- no call, dialog or transaction left
local function assert_clean(...)
  for _, ua in ipairs{ ... } do
    local idle, st = helper.idle(ua, 10)
    assert.is_true(idle, "transactions left: " .. tostring(st and st.transactions))
    local s = ua:stats()
    assert.are.equal(0, s.calls, "calls left")
    assert.are.equal(0, s.dialogs, "dialogs left")
  end
end

describe("PRACK between two Lua UAs", function()
  after_each(function() sip.trace(nil) end)

  for _, tr in ipairs{ "udp", "tcp" } do
    it("a reliable 180 is PRACKed (200), then the call is answered (" .. tr .. ")", function()
      local a, b = pair(tr)
      finally(function() a:close(); b:close() end)
      local log = record()
      local seen = {}
      b:on("INVITE", function(call)
        seen.peer = call:_peer_100rel()
        seen.ring = { call:ring{ reliable = true } }
        seen.tag_early = call.local_tag
        seen.answer = { call:answer{ sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1", port = 5002 }) } }
        seen.why = call:wait(10)
      end)
      helper.run(function()
        local provs, early = {}, nil
        local call = assert(a:invite(b:uri("bob"), { sdp = offer(), reliable = true, timeout = 10,
          on_call = function(c) early = c end,
          on_provisional = function(r)
            provs[#provs + 1] = { status = r.status, require = r:header("Require"), rseq = r:header("RSeq"),
                                  tag = early and early.remote_tag }
          end }))
        assert.are.equal("confirmed", call.state)
        assert.are.equal(5002, call.remote_sdp.media[1].port)
        sip.sleep(0.1)
        -- one 180, PRACKed once, whatever copies went
        assert.are.equal(1, #provs)
        assert.are.equal(180, provs[1].status)
        assert.are.equal("100rel", provs[1].require)
        assert.matches("^%d+$", provs[1].rseq)
        -- the early dialog had the 180's To tag: the 2xx confirmed it
        assert.are.equal(call.remote_tag, provs[1].tag)
        assert.is_true(call:hangup())
      end, 20)
      assert.are.equal("supported", seen.peer)
      assert.are.same({ true }, seen.ring)
      assert.is_string(seen.tag_early)
      assert.are.same({ true }, seen.answer)
      assert.are.equal("bye", seen.why)
      local invite = distinct(log, "out", "^INVITE ")[1]
      assert.are.equal("100rel", header(invite, "Supported"))
      local r180 = distinct(log, "out", "^SIP/2.0 180")
      assert.are.equal(1, #r180, ladder(log))
      local rseq = tonumber(header(r180[1], "RSeq"))
      assert.is_true(rseq >= 1 and rseq < 2 ^ 31)
      local pracks = distinct(log, "out", "^PRACK ")
      assert.are.equal(1, #pracks, ladder(log))
      local icseq = cseq_of(invite)
      assert.are.equal(rseq .. " " .. icseq .. " INVITE", header(pracks[1], "RAck"))
      assert.are.equal(icseq + 1, (cseq_of(pracks[1])))
      assert.matches(";tag=", header(pracks[1], "To"))
      -- the PRACK got 200
      assert.truthy(first_index(log, "in", "^SIP/2.0 200", "PRACK"), ladder(log))
      -- the ACK keeps the INVITE's CSeq; the BYE comes after the PRACK's
      local ack = distinct(log, "out", "^ACK ")[1]
      assert.are.equal(icseq, (cseq_of(ack)))
      local bye = distinct(log, "out", "^BYE ")[1]
      assert.are.equal(icseq + 2, (cseq_of(bye)))
      assert_clean(a, b)
    end)
  end

  it("a reliable 183 with SDP: early media for the caller, the 200 only after its PRACK", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    local log = record()
    local seen = {}
    b:on("INVITE", function(call)
      local ans = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1", port = 5004 })
      seen.progress = { call:progress{ reliable = true, sdp = ans } }
      -- the 183 carried SDP: the 200 waits for its PRACK
      seen.answer = { call:answer() }
      seen.local_sdp = call.local_sdp == ans
      seen.why = call:wait(10)
    end)
    helper.run(function()
      local early, at_183
      local call = assert(a:invite(b:uri("bob"), { sdp = offer(4002), reliable = true, timeout = 10,
        on_call = function(c) early = c end,
        on_provisional = function(r)
          at_183 = { status = r.status, port = early.remote_sdp and early.remote_sdp.media[1].port,
                     state = early.state }
        end }))
      assert.are.same({ status = 183, port = 5004, state = "calling" }, at_183)
      assert.are.equal(5004, call.remote_sdp.media[1].port)
      assert.is_true(call:hangup())
    end, 20)
    assert.are.same({ true }, seen.progress)
    assert.are.same({ true }, seen.answer)
    assert.is_true(seen.local_sdp)
    assert.are.equal("bye", seen.why)
    -- the callee's core answered the PRACK before the callee sent its 200
    local prack_ok = first_index(log, "out", "^SIP/2.0 200", "PRACK")
    local invite_ok = first_index(log, "out", "^SIP/2.0 200", "INVITE")
    assert.truthy(prack_ok, ladder(log))
    assert.truthy(invite_ok, ladder(log))
    assert.is_true(prack_ok < invite_ok, ladder(log))
    local r183 = distinct(log, "out", "^SIP/2.0 183")
    assert.are.equal(1, #r183, ladder(log))
    assert.are.equal("100rel", header(r183[1], "Require"))
    assert.matches("m=audio 5004 ", r183[1])
    assert_clean(a, b)
  end)

  it("an offer in a reliable 183 (the INVITE had none) is answered by the PRACK", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    local log = record()
    local seen = {}
    local uas_offer = offer(6000)
    b:on("INVITE", function(call)
      seen.offerless = call.invite.body == ""
      seen.progress = { call:progress{ reliable = true, sdp = uas_offer } }
      seen.answer = { call:answer() }
      seen.remote_port = call.remote_sdp and call.remote_sdp.media[1].port
      seen.why = call:wait(10)
    end)
    helper.run(function()
      local call = assert(a:invite(b:uri("bob"), { reliable = true, timeout = 10,
        answer = function(o)
          return (sip.sdp.answer(o, { addr = "127.0.0.1", port = 4008 }))
        end }))
      assert.are.equal(6000, call.remote_sdp.media[1].port)
      assert.matches("m=audio 4008 ", call.local_sdp)
      assert.is_true(call:hangup())
    end, 20)
    assert.is_true(seen.offerless)
    assert.are.same({ true }, seen.progress)
    assert.are.same({ true }, seen.answer)
    assert.are.equal(4008, seen.remote_port)
    assert.are.equal("bye", seen.why)
    local pracks = distinct(log, "out", "^PRACK ")
    assert.are.equal(1, #pracks, ladder(log))
    assert.matches("m=audio 4008 ", pracks[1])
    assert.are.equal("application/sdp", header(pracks[1], "Content%-Type"))
    -- the offer was answered: the ACK carries nothing
    local ack = distinct(log, "out", "^ACK ")[1]
    assert.are.equal("0", header(ack, "Content%-Length"))
    assert_clean(a, b)
  end)

  it("one reliable 1xx at a time: a 183 after a reliable 180 waits for its PRACK", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    local log = record()
    local seen = {}
    b:on("INVITE", function(call)
      seen.ring = { call:ring{ reliable = true } }
      seen.progress = { call:progress{ reliable = true,
                                       sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1" }) } }
      seen.answer = { call:answer() }
      seen.why = call:wait(10)
    end)
    helper.run(function()
      local provs = {}
      local call = assert(a:invite(b:uri("bob"), { sdp = offer(), reliable = true, timeout = 10,
        on_provisional = function(r) provs[#provs + 1] = r.status end }))
      assert.are.same({ 180, 183 }, provs)
      assert.is_true(call:hangup())
    end, 20)
    assert.are.same({ true }, seen.ring)
    assert.are.same({ true }, seen.progress)
    assert.are.same({ true }, seen.answer)
    local r180 = distinct(log, "out", "^SIP/2.0 180")[1]
    local r183 = distinct(log, "out", "^SIP/2.0 183")[1]
    local rseq = tonumber(header(r180, "RSeq"))
    assert.are.equal(rseq + 1, tonumber(header(r183, "RSeq")))
    -- the 183 went only once the 180's PRACK was in
    local prack_in = first_index(log, "in", "^PRACK ")
    assert.is_true(prack_in < first_index(log, "out", "^SIP/2.0 183"), ladder(log))
    local pracks = distinct(log, "out", "^PRACK ")
    assert.are.equal(2, #pracks, ladder(log))
    local icseq = cseq_of(distinct(log, "out", "^INVITE ")[1])
    assert.are.equal(rseq .. " " .. icseq .. " INVITE", header(pracks[1], "RAck"))
    assert.are.equal((rseq + 1) .. " " .. icseq .. " INVITE", header(pracks[2], "RAck"))
    assert.are.equal(icseq + 1, (cseq_of(pracks[1])))
    assert.are.equal(icseq + 2, (cseq_of(pracks[2])))
    assert.are.equal(icseq + 3, (cseq_of(distinct(log, "out", "^BYE ")[1])))
    assert_clean(a, b)
  end)

  it("reliable = true fails when the INVITE does not name 100rel; Require makes every 1xx reliable",
     function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    local log = record()
    local seen = {}
    b:on("INVITE", function(call)
      local n = #seen + 1
      seen[n] = { peer = call:_peer_100rel(), rel = { call:ring{ reliable = true } } }
      -- an unreliable one still goes (for the INVITE that required it,
      -- it goes reliably all the same)
      seen[n].plain = { call:ring() }
      seen[n].answer = { call:answer() }
      call:wait(10)
    end)
    helper.run(function()
      local call = assert(a:invite(b:uri("bob"), { sdp = offer(), timeout = 10 }))
      assert.is_true(call:hangup())
      call = assert(a:invite(b:uri("bob"), { sdp = offer(), reliable = "require", timeout = 10 }))
      assert.is_true(call:hangup())
    end, 20)
    assert.is_nil(seen[1].peer)
    assert.are.same({ nil, "the caller does not support 100rel" }, seen[1].rel)
    assert.are.same({ true }, seen[1].plain)
    assert.are.same({ true }, seen[1].answer)
    assert.are.equal("require", seen[2].peer)
    assert.are.same({ true }, seen[2].rel)
    assert.are.same({ true }, seen[2].plain)
    assert.are.same({ true }, seen[2].answer)
    local invites = distinct(log, "out", "^INVITE ")
    assert.is_nil(header(invites[1], "Supported"))
    assert.are.equal("100rel", header(invites[2], "Require"))
    -- the first call's 180 went unreliably (one 180, no RSeq); the
    -- second call's two 180s both reliably, RSeq counting
    local r180 = distinct(log, "out", "^SIP/2.0 180")
    assert.are.equal(3, #r180, ladder(log))
    assert.is_nil(header(r180[1], "RSeq"))
    assert.is_nil(header(r180[1], "Require"))
    assert.are.equal(tonumber(header(r180[2], "RSeq")) + 1, tonumber(header(r180[3], "RSeq")))
    assert.are.equal(2, #distinct(log, "out", "^PRACK "), ladder(log))
    assert_clean(a, b)
  end)

  it("raises for a reliable option of the wrong kind", function()
    local a = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    finally(function() a:close() end)
    helper.run(function()
      helper.raises("option 'reliable' must be true, false or \"require\"", a.invite, a, "sip:x@127.0.0.1:9",
                    { reliable = "yes" })
      helper.raises("reliable", a.invite, a, "sip:x@127.0.0.1:9", { reliable = 1 })
    end)
  end)
end)

-- a raw peer (sip.test.peer) calls a Lua UAS: every copy of every
-- message reaches it, and it sends exactly what it is told
describe("PRACK from a raw peer to a Lua UAS", function()
  local INVITE = [[
    INVITE sip:alice@[remote_ip]:[remote_port] SIP/2.0
    Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
    Max-Forwards: 70
    From: <sip:peer@[local_ip]:[local_port]>;tag=[tag]
    To: <sip:alice@[remote_ip]:[remote_port]>
    Call-ID: [call_id]
    CSeq: 1 INVITE
    Contact: <sip:peer@[local_ip]:[local_port]>
    Supported: 100rel
    Content-Type: application/sdp
    Content-Length: [len]

  ]]
  -- a PRACK: to_tag nil sends it without one
  local function prack(peer, ua, to_tag, rack, cseq)
    return assert(peer:send([[
      PRACK sip:luasip@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:peer@[local_ip]:[local_port]>;tag=[tag]
      To: <sip:alice@[remote_ip]:[remote_port]>[totag]
      Call-ID: [call_id]
      CSeq: [n] PRACK
      RAck: [rack]
      Content-Length: 0

    ]], { to = ua:address():match("^%a+:(.*)$"), totag = to_tag and (";tag=" .. to_tag) or "",
          rack = rack, n = cseq }))
  end
  local function ack(peer, ua, to_tag)
    return assert(peer:send([[
      ACK sip:alice@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:peer@[local_ip]:[local_port]>;tag=[tag]
      To: <sip:alice@[remote_ip]:[remote_port]>;tag=[totag]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Content-Length: 0

    ]], { to = ua:address():match("^%a+:(.*)$"), totag = to_tag }))
  end
  -- a response to our request with this CSeq method, skipping 100s and
  -- copies of the 18x
  local function response(peer, method)
    return peer:expect(function(m) return m.status and m.status >= 200 and m.cseq_method == method end, 10)
  end

  it("no PRACK: the 180 is sent again and again, then the INVITE gets 500 after 64*T1", function()
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0", t1 = T1, t2 = 0.2, t4 = 0.2 })
    local peer <close> = sip.test.peer{ retransmissions = true }
    finally(function() ua:close() end)
    local seen = {}
    ua:on("INVITE", function(call)
      seen.ring = { call:ring{ reliable = true } }
      seen.why = call:wait(20)
      seen.state = call.state
    end)
    sip.test.run(function()
      assert(peer:send(INVITE .. peer:sdp(), { to = ua:address():match("^%a+:(.*)$") }))
      -- the 180 and its copies, all the very same text, until the 500
      local copies, text, rseq, tag = 0, nil, nil, nil
      local final
      while not final do
        local m = assert(peer:expect(function(x) return x.status and x.status > 100 end, 10))
        if m.status == 180 then
          copies = copies + 1
          rseq = rseq or m:header("RSeq")
          tag = tag or m.to_tag
          assert.are.equal(rseq, m:header("RSeq"))
          assert.are.equal("100rel", m:header("Require"))
          text = text or tostring(m)
        else
          final = m
        end
      end
      assert.is_true(copies >= 3, "copies: " .. copies)
      assert.are.equal(500, final.status)
      assert.are.equal("INVITE", final.cseq_method)
      assert.are.equal(tag, final.to_tag)
      ack(peer, ua, tag)
      -- a PRACK now matches nothing: 481
      prack(peer, ua, tag, rseq .. " 1 INVITE", 2)
      assert.are.equal(481, assert(response(peer, "PRACK")).status)
      sip.sleep(0.1)
    end, 30)
    assert.are.same({ true }, seen.ring)
    assert.are.equal("timeout", seen.why)
    assert.are.equal("ended", seen.state)
    assert_clean(ua)
  end)

  it("a PRACK after lost ones gets 200 and stops the resends (and lets the 200 go); others get 481",
     function()
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0", t1 = T1, t2 = 0.2, t4 = 0.2 })
    local peer <close> = sip.test.peer{ retransmissions = true }
    finally(function() ua:close() end)
    local seen = {}
    ua:on("INVITE", function(call)
      -- a 183 with SDP: the 200 waits for its PRACK
      seen.progress = { call:progress{ reliable = true,
                                       sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1" }) } }
      seen.answer = { call:answer() }
      seen.why = call:wait(20)
    end)
    sip.test.run(function()
      assert(peer:send(INVITE .. peer:sdp(), { to = ua:address():match("^%a+:(.*)$") }))
      -- two copies of the 183 "lost": no PRACK for them
      local r183 = assert(peer:expect(183, 10))
      assert(peer:expect(183, 10))
      local tag, rseq = r183.to_tag, tonumber(r183:header("RSeq"))
      -- PRACKs that match nothing: another RSeq, another CSeq number or
      -- method in RAck, a To tag of no dialog, no To tag at all
      local n = 2
      for _, bad in ipairs{ { tag, (rseq + 1) .. " 1 INVITE" }, { tag, rseq .. " 2 INVITE" },
                            { tag, rseq .. " 1 BYE" }, { "nosuchtag", rseq .. " 1 INVITE" },
                            { nil, rseq .. " 1 INVITE" } } do
        prack(peer, ua, bad[1], bad[2], n)
        local res = assert(response(peer, "PRACK"))
        assert.are.equal(481, res.status, bad[2])
        n = n + 1
      end
      -- the right one: 200, and no 183 goes after it; the 200 to the
      -- INVITE, held back until then, follows
      prack(peer, ua, tag, rseq .. " 1 INVITE", n)
      local acked, inv_ok = false, nil
      repeat      -- everything, in the order it came
        local m = assert(peer:expect(nil, 10))
        if m.status == 200 and m.cseq_method == "PRACK" then acked = true end
        if m.status == 183 then assert.is_false(acked, "a 183 after its PRACK was answered") end
        if m.status == 200 and m.cseq_method == "INVITE" then inv_ok = m end
      until inv_ok
      assert.is_true(acked)
      ack(peer, ua, tag)
      -- the same PRACK once more (a new transaction): acknowledged
      -- already, so it matches nothing
      prack(peer, ua, tag, rseq .. " 1 INVITE", n + 1)
      assert.are.equal(481, assert(response(peer, "PRACK")).status)
      assert(peer:send([[
        BYE sip:luasip@[remote_ip]:[remote_port] SIP/2.0
        Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
        Max-Forwards: 70
        From: <sip:peer@[local_ip]:[local_port]>;tag=[tag]
        To: <sip:alice@[remote_ip]:[remote_port]>;tag=[totag]
        Call-ID: [call_id]
        CSeq: [n] BYE
        Content-Length: 0

      ]], { to = ua:address():match("^%a+:(.*)$"), totag = tag, n = n + 2 }))
      assert.are.equal(200, assert(response(peer, "BYE")).status)
      sip.sleep(0.1)
    end, 30)
    assert.are.same({ true }, seen.progress)
    assert.are.same({ true }, seen.answer)
    assert.are.equal("bye", seen.why)
    assert_clean(ua)
  end)
end)

-- a Lua UAC against a raw peer that sends reliable 1xx
describe("PRACK from a Lua UAC to a raw peer", function()
  it("PRACKs each reliable 1xx in order in the early dialog, ignores copies and gaps, ACKs in the dialog",
     function()
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0", t1 = T1, t2 = 0.2, t4 = 0.2 })
    local peer <close> = sip.test.peer{}
    finally(function() ua:close() end)
    local result = {}
    sip.test.run(function()
      sip.spawn(function()
        local provs, early = {}, nil
        local call, err = ua:invite(peer:uri("bob"), { sdp = offer(4030), reliable = true, timeout = 10,
          on_call = function(c) early = c end,
          on_provisional = function(r)
            provs[#provs + 1] = { r.status, r:header("RSeq"), early.remote_sdp and early.remote_sdp.media[1].port }
          end })
        result.provs, result.err = provs, err
        if call then
          result.remote_port = call.remote_sdp.media[1].port
          call:hangup()
        end
        result.done = true
      end)
      local inv = assert(peer:expect("INVITE", 5))
      assert.are.equal("100rel", inv:header("Supported"))
      local icseq = inv.cseq
      local rr = "<sip:" .. peer:address() .. ";lr>"
      local function r183(rseq)
        return assert(peer:reply(inv, 183, nil, { body = peer:sdp(4020),
          headers = { Require = "100rel", RSeq = tostring(rseq), ["Record-Route"] = rr } }))
      end
      r183(5)
      local p1 = assert(peer:expect("PRACK", 5))
      assert.are.equal("5 " .. icseq .. " INVITE", p1:header("RAck"))
      assert.are.equal(icseq + 1, p1.cseq)
      assert.truthy(p1.to_tag)
      -- in the early dialog: its route set and its target (the 183's Contact)
      assert.are.equal(rr, p1:header("Route"))
      assert.are.equal(peer:uri(), p1.uri)
      assert(peer:reply(p1, 200))
      -- a copy of RSeq 5 and an RSeq out of order (7): no PRACK; then 6
      r183(5)
      r183(7)
      r183(6)
      local p2 = assert(peer:expect("PRACK", 5))
      assert.are.equal("6 " .. icseq .. " INVITE", p2:header("RAck"))
      assert.are.equal(icseq + 2, p2.cseq)
      assert(peer:reply(p2, 200))
      -- the 2xx: another target, no Record-Route: the ACK follows it
      local target = "sip:other@" .. peer:address()
      assert(peer:reply(inv, 200, nil, { body = peer:sdp(4022), contact = "<" .. target .. ">" }))
      local ack = assert(peer:expect("ACK", 5))
      assert.are.equal(icseq, ack.cseq)
      assert.are.equal(target, ack.uri)
      assert.is_nil(ack:header("Route"))
      assert.are.equal(p1.to_tag, ack.to_tag)
      local bye = assert(peer:expect("BYE", 5))
      assert.are.equal(icseq + 3, bye.cseq)
      assert.are.equal(target, bye.uri)
      assert(peer:reply(bye, 200))
      -- nothing else: no PRACK for the copy or the gap
      local deadline = sip.now() + 5
      while not result.done and sip.now() < deadline do sip.sleep(0.02) end
      for _, m in ipairs(peer:queued()) do
        assert.is_false(m.method == "PRACK", "a PRACK too many: " .. tostring(m:header("RAck")))
      end
    end, 20)
    assert.is_nil(result.err)
    -- on_provisional heard the two 183s taken, not the copy or the gap;
    -- the first one's SDP was remote_sdp at once (early media)
    assert.are.same({ { 183, "5", 4020 }, { 183, "6", 4020 } }, result.provs)
    assert.are.equal(4022, result.remote_port)
    assert_clean(ua)
  end)
end)

describe("PRACK with SIPp", function()
  after_each(function() sip.trace(nil); helper.stop_all() end)

  it("SIPp requires 100rel: our 180 and 183 go reliably, each PRACKed, the 200 after", function()
    local port = helper.free_port()
    -- Timer J of 6.4 s: the spec ends clean in time
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:" .. port, t1 = 0.1, t2 = 0.4, t4 = 0.4 })
    finally(function() ua:close() end)
    local log = record()
    local seen = {}
    ua:on("INVITE", function(call)
      seen.peer = call:_peer_100rel()
      -- no reliable option: the INVITE requires it
      seen.ring = { call:ring() }
      seen.progress = { call:progress{ sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1", port = 6000 }) } }
      seen.answer = { call:answer() }
      seen.why = call:wait(15)
    end)
    local sipp = helper.sipp{ sf = "uac_prack_require.xml", port = helper.free_port(),
                              remote = "127.0.0.1:" .. port,
                              args = { "-m", 1, "-s", "bob", "-timeout", "20", "-timeout_error" } }
    local rc = sipp:wait(30)
    helper.spin(0.1)
    assert.are.equal(0, rc, sipp.log() .. "\n" .. ladder(log))
    assert.are.equal("require", seen.peer)
    assert.are.same({ true }, seen.ring)
    assert.are.same({ true }, seen.progress)
    assert.are.same({ true }, seen.answer)
    assert.are.equal("bye", seen.why)
    local r180 = distinct(log, "out", "^SIP/2.0 180")
    local r183 = distinct(log, "out", "^SIP/2.0 183")
    assert.are.equal(1, #r180, ladder(log))
    assert.are.equal(1, #r183, ladder(log))
    assert.are.equal(tonumber(header(r180[1], "RSeq")) + 1, tonumber(header(r183[1], "RSeq")))
    -- each PRACK got 200 (a copy of one gets the same 200 again)
    assert.are.equal(0, #distinct(log, "out", "^SIP/2.0 481"), ladder(log))
    assert.are.equal(2, #distinct(log, "out", "^SIP/2.0 200", "PRACK"), ladder(log))
    assert_clean(ua)
  end)

  it("SIPp sends a reliable 183 with SDP and waits for our PRACK before its 200", function()
    local sport = helper.free_port()
    local sipp = helper.sipp{ sf = "uas_prack_183.xml", port = sport,
                              args = { "-m", 1, "-timeout", "20", "-timeout_error" } }
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0", t1 = 0.1, t2 = 0.4, t4 = 0.4 })
    finally(function() ua:close() end)
    local log = record()
    local got = {}
    helper.run(function()
      local early
      local call, err = ua:invite("sip:bob@127.0.0.1:" .. sport, { sdp = offer(4040), reliable = true,
        timeout = 15,
        on_call = function(c) early = c end,
        on_provisional = function(r)
          if r.status == 183 then got.early_port = early.remote_sdp and early.remote_sdp.media[1].port end
        end })
      assert.is_nil(err)
      got.port = call.remote_sdp.media[1].port
      sip.sleep(0.1)
      assert.is_true(call:hangup())
    end, 20)
    local rc = sipp:wait(20)
    assert.are.equal(0, rc, sipp.log() .. "\n" .. ladder(log))
    assert.are.equal(6010, got.early_port)
    assert.are.equal(6010, got.port)
    local pracks = distinct(log, "out", "^PRACK ")
    assert.are.equal(1, #pracks, ladder(log))
    local icseq = cseq_of(distinct(log, "out", "^INVITE ")[1])
    assert.are.equal("1 " .. icseq .. " INVITE", header(pracks[1], "RAck"))
    assert_clean(ua)
  end)
end)
