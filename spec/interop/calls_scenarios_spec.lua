--- Calls against SIPp scenarios of our own (spec/scenarios/u*_*.xml):
-- CANCEL before the answer, 486, a 2xx retransmitted before the ACK, a
-- lost ACK, copies of the INVITE and the BYE after they were answered,
-- re-INVITE hold/unhold both ways, a 200 after CANCEL, and a BYE for an
-- unknown dialog. UDP and TCP where the case exists on both
-- (retransmissions are a UDP matter).
local sip = require "sip"
local helper = require "helper"

local TRANSPORTS = { { "udp", "u1" }, { "tcp", "t1" } }

-- record every message the Lua side sends and receives
local function record()
  local log = {}
  sip.trace(function(dir, proto, peer, text)
    log[#log + 1] = { dir = dir, proto = proto, peer = peer, text = text,
                      first = text:match("^[^\r\n]*") }
  end)
  return log
end

-- messages in the log: dir "out"/"in", a pattern on the first line and,
-- optionally, on the CSeq method
local function count(log, dir, first, cseq_method)
  local n = 0
  for _, m in ipairs(log) do
    if m.dir == dir and m.first:match(first) and
       (not cseq_method or m.text:match("\n[Cc][Ss][Ee][Qq]:%s*%d+%s+" .. cseq_method)) then
      n = n + 1
    end
  end
  return n
end

local function ladder(log)
  local out = {}
  for _, m in ipairs(log) do out[#out + 1] = (m.dir == "out" and "--> " or "<-- ") .. m.first end
  return table.concat(out, "\n")
end

-- a Lua UAS on a free port, and SIPp running scenario `sf` against it
local function uas_and_sipp(tr, sf, handler, extra, ua_opts)
  local port = helper.free_port()
  local opts = { listen = tr[1] .. ":127.0.0.1:" .. port }
  for k, v in pairs(ua_opts or {}) do opts[k] = v end
  local ua = assert(sip.ua(opts))
  ua:on("INVITE", handler)
  local args = { "-m", 1, "-s", "bob", "-timeout", "15", "-timeout_error" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local sipp = helper.sipp{ sf = sf, port = helper.free_port(), transport = tr[2],
                            remote = "127.0.0.1:" .. port, args = args }
  return ua, sipp
end

local function sipp_ok(sipp, timeout)
  local rc = sipp:wait(timeout or 20)
  assert.are.equal(0, rc, sipp.log())
end

local function answer_sdp(call)
  return (sip.sdp.answer(call.invite.body, { addr = "127.0.0.1", port = 6000 }))
end

describe("SIPp calling a Lua UAS", function()
  for _, tr in ipairs(TRANSPORTS) do
    it("is CANCELled before the answer: wait() returns \"cancel\", 487 (" .. tr[1] .. ")", function()
      local got = {}
      local log = record()
      local ua, sipp = uas_and_sipp(tr, "uac_cancel.xml", function(call)
        assert(call:ring())
        got.why = call:wait(10)
        got.state = call.state
        got.answer = { call:answer() }
      end)
      finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
      sipp_ok(sipp)
      helper.spin(0.1)
      assert.are.equal("cancel", got.why)
      assert.are.equal("ended", got.state)
      assert.is_nil(got.answer[1])
      assert.are.equal(1, count(log, "in", "^CANCEL "))
      assert.are.equal(1, count(log, "out", "^SIP/2%.0 200 ", "CANCEL"), ladder(log))
      assert.are.equal(1, count(log, "out", "^SIP/2%.0 487 ", "INVITE"), ladder(log))
      assert.are.equal(0, count(log, "out", "^SIP/2%.0 200 ", "INVITE"))
      assert.are.equal(0, ua:stats().calls)
    end)

    it("rejects with 486; SIPp ACKs it and nothing is retransmitted (" .. tr[1] .. ")", function()
      local got = {}
      local log = record()
      local ua, sipp = uas_and_sipp(tr, "uac_reject.xml", function(call)
        call:ring()
        got.reject = { call:reject(486) }
        got.why = call:wait()
      end, tr[1] == "udp" and { "-nr" } or nil)
      finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
      sipp_ok(sipp)
      assert.are.same({ true }, got.reject)
      assert.are.equal("rejected", got.why)
      assert.are.equal(1, count(log, "out", "^SIP/2%.0 486 "), ladder(log))
      assert.are.equal(1, count(log, "in", "^ACK "))
      assert.are.equal(0, ua:stats().calls)
    end)

    it("answers a re-INVITE hold (sendonly -> recvonly) and unhold (" .. tr[1] .. ")", function()
      local got = { offers = {} }
      local log = record()
      local ua, sipp = uas_and_sipp(tr, "uac_reinvite_hold.xml", function(call)
        call:on("reinvite", function(c, req)
          got.offers[#got.offers + 1] = sip.sdp.parse(req.body).media[1].direction
          -- nil: the default answer, our session mirrored to the offer
        end)
        got.answer = { call:answer{ sdp = answer_sdp(call) } }
        got.why = call:wait(10)
        got.remote_dir = call.remote_sdp.media[1].direction
        got.local_sdp = call.local_sdp
      end)
      finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
      sipp_ok(sipp)
      helper.spin(0.1)
      assert.are.same({ true }, got.answer)
      assert.are.equal("bye", got.why)
      assert.are.same({ "sendonly", "sendrecv" }, got.offers)
      assert.are.equal("sendrecv", got.remote_dir)
      -- our answers kept our port and counted the o= version up
      assert.truthy(got.local_sdp:find("m=audio 6000 ", 1, true))
      assert.are.equal(3, count(log, "out", "^SIP/2%.0 200 ", "INVITE"), ladder(log))
    end)

    it("answers a BYE for an unknown dialog with 481 (" .. tr[1] .. ")", function()
      local log = record()
      local ua, sipp = uas_and_sipp(tr, "uac_bye_unknown.xml", function() return 486 end)
      finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
      sipp_ok(sipp)
      assert.are.equal(1, count(log, "out", "^SIP/2%.0 481 ", "BYE"), ladder(log))
    end)
  end

  it("retransmits its 200 until the ACK comes: answer() returns true (udp)", function()
    local got = {}
    local log = record()
    local ua, sipp = uas_and_sipp(TRANSPORTS[1], "uac_ack_lost.xml", function(call)
      call:ring()
      local t0 = sip.now()
      got.answer = { call:answer{ sdp = answer_sdp(call) } }
      got.waited = sip.now() - t0
      got.state = call.state
      got.why = call:wait(10)
    end, { "-nr" })
    finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
    sipp_ok(sipp)
    helper.spin(0.1)
    assert.are.same({ true }, got.answer)
    assert.are.equal("confirmed", got.state)
    -- the ACK came after the first retransmission, at T1 (0.5 s)
    assert.is_true(got.waited >= 0.4, "answer returned after " .. got.waited .. " s")
    assert.are.equal("bye", got.why)
    assert.is_true(count(log, "out", "^SIP/2%.0 200 ", "INVITE") >= 2, ladder(log))
    assert.are.equal(1, count(log, "in", "^ACK "))
  end)

  it("absorbs an INVITE copy after the ACK and answers a BYE copy with the same 200 (udp)", function()
    local calls, whys = 0, {}
    local log = record()
    local ua, sipp = uas_and_sipp(TRANSPORTS[1], "uac_retrans_after.xml", function(call)
      calls = calls + 1
      call:ring()
      assert(call:answer{ sdp = answer_sdp(call) })
      whys[#whys + 1] = call:wait(10)
    end, { "-nr" })
    finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
    sipp_ok(sipp)
    helper.spin(0.1)
    -- the INVITE copy made no second call and got no response
    assert.are.equal(1, calls)
    assert.are.same({ "bye" }, whys)
    assert.are.equal(2, count(log, "in", "^INVITE "), ladder(log))
    assert.are.equal(1, count(log, "out", "^SIP/2%.0 200 ", "INVITE"), ladder(log))
    -- the BYE copy got the 200 again, and the handler saw one BYE
    assert.are.equal(2, count(log, "in", "^BYE "), ladder(log))
    assert.are.equal(2, count(log, "out", "^SIP/2%.0 200 ", "BYE"), ladder(log))
    -- both still count as transactions until Timers L and J
    assert.is_true(ua:stats().transactions >= 2)
  end)

  it("gives up on a 200 never ACKed after 64*T1: answer() fails, BYE (udp)", function()
    local T1 = 0.05
    local got = {}
    local log = record()
    local ua, sipp = uas_and_sipp(TRANSPORTS[1], "uac_no_ack.xml", function(call)
      local t0 = sip.now()
      got.answer = { call:answer{ sdp = answer_sdp(call) } }
      got.waited = sip.now() - t0
      got.why = call:wait(10)
    end, nil, { t1 = T1, t2 = 0.4 })
    finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
    sipp_ok(sipp)
    helper.spin(0.1)
    assert.is_nil(got.answer[1])
    assert.are.equal("timeout", got.answer[2])
    assert.is_near(64 * T1, got.waited, 0.5)
    assert.are.equal("timeout", got.why)
    assert.is_true(count(log, "out", "^SIP/2%.0 200 ", "INVITE") >= 5, ladder(log))
    assert.are.equal(1, count(log, "out", "^BYE "), ladder(log))
    assert.are.equal(1, count(log, "in", "^SIP/2%.0 200 ", "BYE"), ladder(log))
    assert.are.equal(0, ua:stats().calls)
    assert.are.equal(0, ua:stats().dialogs)
  end)
end)

-- the Lua UAC side: ua:invite to a SIPp UAS scenario
local function sipp_uas(tr, sf, extra)
  local port = helper.free_port()
  local args = { "-m", 1, "-timeout", "15", "-timeout_error" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local sipp = helper.sipp{ sf = sf, port = port, transport = tr[2], args = args }
  return sipp, "sip:service@127.0.0.1:" .. port .. (tr[1] == "tcp" and ";transport=tcp" or "")
end

local function offer()
  return (sip.sdp.offer{ addr = "127.0.0.1", port = 4000 })
end

describe("a Lua UAC calling SIPp", function()
  it("ACKs every copy of a retransmitted 200 (udp)", function()
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    local log = record()
    finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
    local sipp, uri = sipp_uas(TRANSPORTS[1], "uas_2xx_retrans.xml", { "-nr" })
    local call_id
    helper.run(function()
      sip.sleep(0.01)
      local call, err = ua:invite(uri, { sdp = offer(), timeout = 5 })
      assert.is_nil(err)
      call_id = call.call_id
      -- the second 200 comes 600 ms after the first
      sip.sleep(1)
      assert.are.equal("confirmed", call.state)
      assert(call:hangup())
    end, 15)
    sipp_ok(sipp)
    assert.are.equal(2, count(log, "in", "^SIP/2%.0 200 ", "INVITE"), ladder(log))
    assert.are.equal(2, count(log, "out", "^ACK "), ladder(log))
    for _, m in ipairs(log) do
      if m.first:match("^ACK ") then
        assert.truthy(m.text:find(call_id, 1, true))
        assert.truthy(m.text:match("\nCSeq:%s*1 ACK"))
      end
    end
  end)

  it("keeps the first of two forked 200s, ACKs and BYEs the other (udp)", function()
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    local log = record()
    finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
    local sipp, uri = sipp_uas(TRANSPORTS[1], "uas_forked_2xx.xml")
    local tag
    helper.run(function()
      sip.sleep(0.01)
      local call, err = ua:invite(uri, { sdp = offer(), timeout = 5 })
      assert.is_nil(err)
      tag = call.remote_tag
      assert.truthy(call.remote_target:find("sip:a@", 1, true), call.remote_target)
      sip.sleep(0.5)
      assert.are.equal("confirmed", call.state)
      local ok, herr = call:hangup()
      assert.is_true(ok, ladder(log) .. "\n" .. tostring(herr))
    end, 15)
    sipp_ok(sipp)
    assert.truthy(tag:find("SIPpForkA", 1, true), tag)
    assert.are.equal(2, count(log, "out", "^ACK "), ladder(log))
    assert.are.equal(1, count(log, "out", "^BYE sip:b@"), ladder(log))
    assert.are.equal(1, count(log, "out", "^BYE sip:a@"), ladder(log))
  end)

  for _, tr in ipairs(TRANSPORTS) do
    it("holds and resumes a SIPp UAS with re-INVITEs (" .. tr[1] .. ")", function()
      local ua = assert(sip.ua{ listen = tr[1] .. ":127.0.0.1:0" })
      local log = record()
      finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
      local sipp, uri = sipp_uas(tr, "uas_hold.xml")
      helper.run(function()
        sip.sleep(0.01)
        local call = assert(ua:invite(uri, { sdp = offer(), timeout = 5 }))
        assert.are.equal("sendrecv", call.remote_sdp.media[1].direction)
        local res, err = call:hold()
        assert.is_nil(err)
        assert.are.equal(200, res.status)
        assert.are.equal("recvonly", call.remote_sdp.media[1].direction)
        res, err = call:unhold()
        assert.is_nil(err)
        assert.are.equal(200, res.status)
        assert.are.equal("sendrecv", call.remote_sdp.media[1].direction)
        assert(call:hangup())
      end, 15)
      sipp_ok(sipp)
      -- an ACK for each of the three 200s
      assert.are.equal(3, count(log, "out", "^ACK "), ladder(log))
    end)

    it("ACKs and BYEs a 200 that arrives after its CANCEL (" .. tr[1] .. ")", function()
      -- a small T1: the INVITE transaction (Timer D = 64*T1) ends soon
      local ua = assert(sip.ua{ listen = tr[1] .. ":127.0.0.1:0", t1 = 0.05, t4 = 0.1 })
      local log = record()
      finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
      local sipp, uri = sipp_uas(tr, "uas_200_after_cancel.xml")
      local call, err
      helper.run(function()
        sip.sleep(0.01)
        call, err = ua:invite(uri, { sdp = offer(), timeout = 0.5 })
        -- the ACK and BYE go out from the core, after invite returned
        local deadline = sip.now() + 5
        while count(log, "in", "^SIP/2%.0 200 ", "BYE") == 0 and sip.now() < deadline do
          sip.sleep(0.05)
        end
      end, 15)
      sipp_ok(sipp)
      assert.is_nil(call)
      assert.truthy(err == "timeout" or err == "cancelled", err)
      assert.are.equal(1, count(log, "out", "^CANCEL "), ladder(log))
      assert.are.equal(1, count(log, "in", "^SIP/2%.0 200 ", "INVITE"), ladder(log))
      assert.are.equal(1, count(log, "out", "^ACK "), ladder(log))
      assert.are.equal(1, count(log, "out", "^BYE "), ladder(log))
      assert.are.equal(1, count(log, "in", "^SIP/2%.0 200 ", "BYE"), ladder(log))
      -- ACK before BYE
      local ack_at, bye_at
      for i, m in ipairs(log) do
        if m.first:match("^ACK ") then ack_at = i end
        if m.first:match("^BYE ") then bye_at = i end
      end
      assert.is_true(ack_at < bye_at)
      assert.is_true((helper.idle(ua, 10)))
      assert.are.equal(0, ua:stats().calls)
      assert.are.equal(0, ua:stats().dialogs)
    end)
  end
end)
