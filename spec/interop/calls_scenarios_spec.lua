--- Calls against SIPp scenarios of our own (spec/scenarios/u*_*.xml):
-- CANCEL before the answer, 486, a 2xx retransmitted before the ACK, a
-- lost ACK, copies of the INVITE and the BYE after they were answered,
-- re-INVITE hold/unhold both ways, a 200 after CANCEL, and a BYE for an
-- unknown dialog. UDP and TCP where the case exists on both
-- (retransmissions are a UDP matter).
--
-- Over UDP a request or final response of ours may go out more than
-- once, as RFC 3261 allows (Timers A, E and G, a 2xx until its ACK), and
-- so may SIPp's: a slow Lua side (valgrind makes it ~20 times slower, a
-- spec may set a small T1) retransmits before it reads the answer
-- already waiting. The scenarios take such copies wherever they can come
-- in, and the checks here want "one message and its copies, none once
-- the answer was in" rather than one message. Each "(udp, slow ...)"
-- case stops the Lua side dead at the worst moment, so that the copies
-- come for sure: each failed before (SIPp aborted the call, or a check
-- wanted exactly one message). Two of them are pending: they pin bugs of
-- the core that such copies show.
local sip = require "sip"
local helper = require "helper"

local TRANSPORTS = { { "udp", "u1" }, { "tcp", "t1" } }

-- does log entry m match: dir "out"/"in", a pattern on the first line
-- and, optionally, the CSeq: its method ("BYE") or number and method
-- ("2 INVITE")
local function is(m, dir, first, cseq)
  if m.dir ~= dir or not m.first:match(first) then return false end
  if not cseq then return true end
  local num, method = m.text:match("\n[Cc][Ss][Ee][Qq]:%s*(%d+)%s+(%u+)")
  local want_num, want_method = cseq:match("^(%d+) (%u+)$")
  if want_num then return num == want_num and method == want_method end
  return method == cseq
end

-- record every message the Lua side sends and receives. With stall, e.g.
-- { "out", "^CANCEL ", secs = 0.3 }, the Lua side then stops dead for
-- secs right after the first such message (the nth with nth = n), as it
-- can under valgrind: its loop time stands still meanwhile, so its
-- retransmission timers fire before it reads what the peer sent.
-- stall.done tells whether it happened.
local function record(stall)
  local log = {}
  local seen = 0
  sip.trace(function(dir, proto, peer, text)
    local m = { dir = dir, proto = proto, peer = peer, text = text, first = text:match("^[^\r\n]*") }
    log[#log + 1] = m
    if stall and not stall.done and is(m, stall[1], stall[2], stall[3]) then
      seen = seen + 1
      if seen == (stall.nth or 1) then
        stall.done = true
        -- os.clock, not sip.now: that would move the loop's time on
        local till = os.clock() + stall.secs
        repeat until os.clock() >= till
      end
    end
  end)
  return log
end

-- how many messages in the log match (see is)
local function count(log, dir, first, cseq)
  local n = 0
  for _, m in ipairs(log) do
    if is(m, dir, first, cseq) then n = n + 1 end
  end
  return n
end

local function ladder(log)
  local out = {}
  for _, m in ipairs(log) do out[#out + 1] = (m.dir == "out" and "--> " or "<-- ") .. m.first end
  return table.concat(out, "\n")
end

-- One message sent and retransmitted until `stop` came in: over TCP
-- exactly one; over UDP one or more copies of the very same bytes (a
-- retransmission, not a second message), none once `stop` was in.
-- msg and stop are { dir, first, cseq } as for is. Returns how many.
local function one_until(log, tr, msg, stop)
  local n, texts, distinct, stopped, late = 0, {}, 0, false, 0
  for _, m in ipairs(log) do
    if not stopped and is(m, stop[1], stop[2], stop[3]) then stopped = true end
    if is(m, msg[1], msg[2], msg[3]) then
      n = n + 1
      if not texts[m.text] then texts[m.text] = true; distinct = distinct + 1 end
      if stopped then late = late + 1 end
    end
  end
  local what = msg[2] .. " " .. (msg[3] or "")
  assert.is_true(stopped, "never came in: " .. stop[2] .. "\n" .. ladder(log))
  assert.are.equal(1, distinct, "one " .. what .. " and its copies\n" .. ladder(log))
  if tr == "tcp" then assert.are.equal(1, n, what .. "\n" .. ladder(log)) end
  assert.are.equal(0, late, what .. " sent after " .. stop[2] .. "\n" .. ladder(log))
  return n
end

-- at least one message; over TCP exactly one
local function some(log, tr, dir, first, cseq)
  local n = count(log, dir, first, cseq)
  if tr == "tcp" then
    assert.are.equal(1, n, ladder(log))
  else
    assert.is_true(n >= 1, ladder(log))
  end
  return n
end

-- with a stall: it happened, and the message it followed came again (a
-- copy the stall caused), so the case tested what it says
local function stalled(stall, log)
  if not stall then return end
  assert.is_true(stall.done, "no stall\n" .. ladder(log))
  assert.is_true(count(log, stall[1], stall[2], stall[3]) > (stall.nth or 1),
                 "no copy of " .. stall[2] .. "\n" .. ladder(log))
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

-- the cases of a test: each transport, then each { slow = what,
-- stall = ..., known = bug, ... } over UDP with that stall (the other
-- fields are the test's). A case with a known bug (not fixed yet) is
-- listed as pending
local function cases(transports, ...)
  local out = {}
  for _, tr in ipairs(transports) do out[#out + 1] = { tr = tr, name = tr[1] } end
  for _, v in ipairs{ ... } do
    local c = { tr = TRANSPORTS[1], name = "udp, " .. v.slow }
    for k, x in pairs(v) do
      if k ~= "slow" then c[k] = x end
    end
    out[#out + 1] = c
  end
  return out
end

-- it(), or pending() for a case with a known bug
local function it_case(c, name, fn)
  if c.known then
    pending(name .. " [known bug: " .. c.known .. "]")
  else
    it(name, fn)
  end
end

-- a fresh copy of a stall, per run
local function fresh(stall)
  if not stall then return nil end
  local s = {}
  for k, v in pairs(stall) do s[k] = v end
  return s
end

describe("SIPp calling a Lua UAS", function()
  -- slow to ring: SIPp sends the INVITE again (after 500 ms), we the 180
  -- again, SIPp the CANCEL again (its answer to a copy of the 180) and we
  -- its 200 again, after our 487: that copy aborted SIPp's call
  -- (uac_cancel.xml)
  for _, c in ipairs(cases(TRANSPORTS, { slow = "slow to ring: INVITE, 180, CANCEL and its 200 come again",
                                      stall = { "in", "^INVITE ", secs = 0.7 } })) do
    local tr = c.tr
    it("is CANCELled before the answer: wait() returns \"cancel\", 487 (" .. c.name .. ")", function()
      local got = {}
      local stall = fresh(c.stall)
      local log = record(stall)
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
      -- every CANCEL (SIPp sends it again on a copy of our 180) got a 200
      local cancels = some(log, tr[1], "in", "^CANCEL ")
      assert.are.equal(cancels, count(log, "out", "^SIP/2%.0 200 ", "CANCEL"), ladder(log))
      -- the 487 until the ACK came in (Timer G)
      one_until(log, tr[1], { "out", "^SIP/2%.0 487 ", "INVITE" }, { "in", "^ACK " })
      assert.are.equal(0, count(log, "out", "^SIP/2%.0 200 ", "INVITE"))
      assert.are.equal(0, ua:stats().calls)
      stalled(stall, log)
    end)
  end

  -- slow to read the ACK: the 486 goes out again (Timer G) and SIPp ACKs
  -- it again; "exactly one 486" failed
  for _, c in ipairs(cases(TRANSPORTS, { slow = "slow to read the ACK: the 486 comes again",
                                      stall = { "out", "^SIP/2%.0 486 ", secs = 0.7 } })) do
    local tr = c.tr
    it("rejects with 486; SIPp's ACK stops its retransmissions (" .. c.name .. ")", function()
      local got = {}
      local stall = fresh(c.stall)
      local log = record(stall)
      local ua, sipp = uas_and_sipp(tr, "uac_reject.xml", function(call)
        call:ring()
        got.reject = { call:reject(486) }
        got.why = call:wait()
      end, tr[1] == "udp" and { "-nr" } or nil)
      finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
      sipp_ok(sipp)
      assert.are.same({ true }, got.reject)
      assert.are.equal("rejected", got.why)
      one_until(log, tr[1], { "out", "^SIP/2%.0 486 " }, { "in", "^ACK " })
      some(log, tr[1], "in", "^ACK ")
      assert.are.equal(0, ua:stats().calls)
      stalled(stall, log)
    end)
  end

  -- slow to read the first ACK: a copy of the first 200 comes in after
  -- SIPp's hold re-INVITE went out, and SIPp took it for the re-INVITE's
  -- 200 (uac_reinvite_hold.xml)
  for _, c in ipairs(cases(TRANSPORTS, { slow = "slow to read the ACK: the first 200 crosses the re-INVITE",
                                      stall = { "out", "^SIP/2%.0 200 ", "1 INVITE", secs = 0.7 } })) do
    local tr = c.tr
    it("answers a re-INVITE hold (sendonly -> recvonly) and unhold (" .. c.name .. ")", function()
      local got = { offers = {} }
      local stall = fresh(c.stall)
      local log = record(stall)
      local ua, sipp = uas_and_sipp(tr, "uac_reinvite_hold.xml", function(call)
        call:on("reinvite", function(_, req)
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
      -- a 200 for each INVITE, retransmitted until its ACK came in
      for n = 1, 3 do
        one_until(log, tr[1], { "out", "^SIP/2%.0 200 ", n .. " INVITE" }, { "in", "^ACK ", n .. " ACK" })
      end
      stalled(stall, log)
    end)
  end

  -- slow to answer: SIPp sends the BYE again and we the 481 again;
  -- "exactly one 481" failed
  for _, c in ipairs(cases(TRANSPORTS, { slow = "slow to answer: the BYE comes again",
                                      stall = { "in", "^BYE ", secs = 0.7 } })) do
    local tr = c.tr
    it("answers a BYE for an unknown dialog with 481 (" .. c.name .. ")", function()
      local stall = fresh(c.stall)
      local log = record(stall)
      local ua, sipp = uas_and_sipp(tr, "uac_bye_unknown.xml", function() return 486 end)
      finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
      sipp_ok(sipp)
      helper.spin(0.1)
      -- each copy of the BYE got the 481 again
      local byes = some(log, tr[1], "in", "^BYE ")
      assert.are.equal(byes, count(log, "out", "^SIP/2%.0 481 ", "BYE"), ladder(log))
      stalled(stall, log)
    end)
  end

  -- slow to read the ACK: the third copy of the 200 came in after SIPp's
  -- BYE, and SIPp took it for the BYE's 200 (uac_ack_lost.xml)
  for _, c in ipairs(cases({ TRANSPORTS[1] }, { slow = "slow to read the ACK: a 200 crosses the BYE",
                                             stall = { "out", "^SIP/2%.0 200 ", "INVITE", nth = 2, secs = 1.2 } })) do
    it("retransmits its 200 until the ACK comes: answer() returns true (" .. c.name .. ")", function()
      local got = {}
      local stall = fresh(c.stall)
      local log = record(stall)
      local ua, sipp = uas_and_sipp(c.tr, "uac_ack_lost.xml", function(call)
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
      local n = one_until(log, "udp", { "out", "^SIP/2%.0 200 ", "INVITE" }, { "in", "^ACK " })
      assert.is_true(n >= 2, ladder(log))
      -- SIPp ACKs the second copy, and again any later one (-nr)
      assert.is_true(count(log, "in", "^ACK ") >= 1, ladder(log))
      stalled(stall, log)
    end)
  end

  -- slow to read the ACK: a copy of the 200 came in after SIPp's BYE, and
  -- SIPp took it for the BYE's 200 (uac_retrans_after.xml)
  for _, c in ipairs(cases({ TRANSPORTS[1] }, { slow = "slow to read the ACK: the 200 crosses the BYE",
                                             stall = { "out", "^SIP/2%.0 200 ", "INVITE", secs = 1.2 } })) do
    it("absorbs an INVITE copy after the ACK and answers a BYE copy with the same 200 (" ..
       c.name .. ")", function()
      local calls, whys = 0, {}
      local stall = fresh(c.stall)
      local log = record(stall)
      local ua, sipp = uas_and_sipp(c.tr, "uac_retrans_after.xml", function(call)
        calls = calls + 1
        call:ring()
        assert(call:answer{ sdp = answer_sdp(call) })
        whys[#whys + 1] = call:wait(10)
      end, { "-nr" })
      finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
      sipp_ok(sipp)
      helper.spin(0.1)
      -- the INVITE copy made no second call and got no response: nothing
      -- for the INVITE went out once the ACK was in but the 200's copies
      -- before it
      assert.are.equal(1, calls)
      assert.are.same({ "bye" }, whys)
      assert.are.equal(2, count(log, "in", "^INVITE "), ladder(log))
      one_until(log, "udp", { "out", "^SIP/2%.0 200 ", "INVITE" }, { "in", "^ACK " })
      local acked = false
      for _, m in ipairs(log) do
        acked = acked or is(m, "in", "^ACK ")
        assert.is_false(acked and is(m, "out", "^SIP/2%.0 ", "INVITE"), ladder(log))
      end
      -- the BYE copy got the 200 again, and the handler saw one BYE
      assert.are.equal(2, count(log, "in", "^BYE "), ladder(log))
      assert.are.equal(2, count(log, "out", "^SIP/2%.0 200 ", "BYE"), ladder(log))
      -- both still count as transactions until Timers L and J
      assert.is_true(ua:stats().transactions >= 2)
      stalled(stall, log)
    end)
  end

  -- slow to read the BYE's 200 (T1 = 50 ms): the BYE goes out again;
  -- "exactly one BYE" failed
  for _, c in ipairs(cases({ TRANSPORTS[1] }, { slow = "slow to read the BYE's 200: the BYE comes again",
                                             stall = { "out", "^BYE ", secs = 0.3 } })) do
    it("gives up on a 200 never ACKed after 64*T1: answer() fails, BYE (" .. c.name .. ")", function()
      local T1 = 0.05
      local got = {}
      local stall = fresh(c.stall)
      local log = record(stall)
      local ua, sipp = uas_and_sipp(c.tr, "uac_no_ack.xml", function(call)
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
      -- not before 64*T1; later only by as much as the loop was late
      assert.is_true(got.waited >= 64 * T1 - 0.01, "gave up after " .. got.waited .. " s")
      assert.is_true(got.waited < 64 * T1 + 1.5, "gave up after " .. got.waited .. " s")
      assert.are.equal("timeout", got.why)
      assert.is_true(count(log, "out", "^SIP/2%.0 200 ", "INVITE") >= 5, ladder(log))
      one_until(log, "udp", { "out", "^BYE " }, { "in", "^SIP/2%.0 200 ", "BYE" })
      assert.are.equal(0, ua:stats().calls)
      assert.are.equal(0, ua:stats().dialogs)
      stalled(stall, log)
    end)
  end
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

-- slow after sending the INVITE: Timer A sends it again after SIPp
-- answered
local SLOW_INVITE = { "out", "^INVITE ", "1 INVITE", secs = 0.7 }

describe("a Lua UAC calling SIPp", function()
  -- slow to read the 180: with -nr SIPp took the INVITE copy for an
  -- unexpected message and aborted (uas_2xx_retrans.xml)
  for _, c in ipairs(cases({ TRANSPORTS[1] }, { slow = "slow to read the 180: the INVITE comes again",
                                             stall = SLOW_INVITE })) do
    it("ACKs every copy of a retransmitted 200 (" .. c.name .. ")", function()
      local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
      local stall = fresh(c.stall)
      local log = record(stall)
      finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
      local sipp, uri = sipp_uas(c.tr, "uas_2xx_retrans.xml", { "-nr" })
      local call_id
      helper.run(function()
        sip.sleep(0.01)
        local call, err = ua:invite(uri, { sdp = offer(), timeout = 5 })
        assert.is_nil(err)
        call_id = call.call_id
        -- the second 200 comes 600 ms after the first: hang up once it
        -- is ACKed (SIPp wants that ACK before the BYE)
        local deadline = sip.now() + 5
        while count(log, "out", "^ACK ") < 2 and sip.now() < deadline do sip.sleep(0.05) end
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
      stalled(stall, log)
    end)
  end

  -- slow to read the first 200: SIPp sends it again for the INVITE copy,
  -- and the second 200 again for the copy of our ACK that follows; the
  -- ACK for that came in after our BYE, unexpected (uas_forked_2xx.xml).
  -- Each copy of the second 200 gets its ACK again, and one BYE in all
  for _, c in ipairs(cases({ TRANSPORTS[1] }, {
    slow = "slow to read the first 200: the INVITE comes again", stall = SLOW_INVITE })) do
    it_case(c, "keeps the first of two forked 200s, ACKs and BYEs the other (" .. c.name .. ")", function()
      local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
      local stall = fresh(c.stall)
      local log = record(stall)
      finally(function() sip.trace(false); helper.stop_all(); ua:close() end)
      local sipp, uri = sipp_uas(c.tr, "uas_forked_2xx.xml")
      local tag
      helper.run(function()
        sip.sleep(0.01)
        local call, err = ua:invite(uri, { sdp = offer(), timeout = 5 })
        assert.is_nil(err)
        tag = call.remote_tag
        assert.truthy(call.remote_target:find("sip:a@", 1, true), call.remote_target)
        -- SIPp wants the BYE for the second 200 first: hang up once it
        -- is answered
        local deadline = sip.now() + 5
        while count(log, "in", "^SIP/2%.0 200 ", "BYE") == 0 and sip.now() < deadline do sip.sleep(0.05) end
        assert.are.equal("confirmed", call.state)
        local ok, herr = call:hangup()
        assert.is_true(ok, ladder(log) .. "\n" .. tostring(herr))
      end, 15)
      sipp_ok(sipp)
      assert.truthy(tag:find("SIPpForkA", 1, true), tag)
      -- an ACK for every 200, copies included (RFC 3261 13.2.2.4)
      local oks = count(log, "in", "^SIP/2%.0 200 ", "INVITE")
      assert.is_true(oks >= 2, ladder(log))
      assert.are.equal(oks, count(log, "out", "^ACK "), ladder(log))
      one_until(log, "udp", { "out", "^BYE sip:b@" }, { "in", "^SIP/2%.0 200 ", "BYE" })
      assert.is_true(count(log, "out", "^BYE sip:a@") >= 1, ladder(log))
      stalled(stall, log)
    end)
  end

  -- slow to read the 180: SIPp had sent the 180 and the 200 when the
  -- INVITE copy came in, and aborted on it (uas_hold.xml)
  for _, c in ipairs(cases(TRANSPORTS, { slow = "slow to read the 180: the INVITE comes again",
                                        stall = SLOW_INVITE }, {
    slow = "slow to read the hold's 200: its copy comes after the unhold re-INVITE",
    stall = { "out", "^INVITE ", "2 INVITE", secs = 0.7 }, every_copy_acked = true })) do
    local tr = c.tr
    it_case(c, "holds and resumes a SIPp UAS with re-INVITEs (" .. c.name .. ")", function()
      local ua = assert(sip.ua{ listen = tr[1] .. ":127.0.0.1:0" })
      local stall = fresh(c.stall)
      local log = record(stall)
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
      -- an ACK for each of the three 200s, and for each copy of one
      -- (13.2.2.4), a late copy after the next re-INVITE too
      local oks = count(log, "in", "^SIP/2%.0 200 ", "INVITE")
      assert.is_true(oks >= 3, ladder(log))
      if tr[1] == "tcp" then assert.are.equal(3, oks, ladder(log)) end
      if c.every_copy_acked then
        assert.are.equal(oks, count(log, "out", "^ACK "), ladder(log))
      else
        local acks = count(log, "out", "^ACK ")
        assert.is_true(acks >= 3 and acks <= oks, ladder(log))
      end
      for n = 1, 3 do
        one_until(log, tr[1], { "out", "^INVITE ", n .. " INVITE" }, { "in", "^SIP/2%.0 ", n .. " INVITE" })
      end
      stalled(stall, log)
    end)
  end

  -- slow to read the CANCEL's 200 (T1 = 50 ms): the CANCEL copy came in
  -- after SIPp had sent both 200s, and SIPp aborted on the "unexpected
  -- CANCEL" (uas_200_after_cancel.xml; seen under valgrind)
  for _, c in ipairs(cases(TRANSPORTS, { slow = "slow to read the 200s: the CANCEL comes again",
                                      stall = { "out", "^CANCEL ", secs = 0.3 } })) do
    local tr = c.tr
    it("ACKs and BYEs a 200 that arrives after its CANCEL (" .. c.name .. ")", function()
      -- a small T1: the INVITE transaction (Timer D = 64*T1) ends soon
      local ua = assert(sip.ua{ listen = tr[1] .. ":127.0.0.1:0", t1 = 0.05, t4 = 0.1 })
      local stall = fresh(c.stall)
      local log = record(stall)
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
      -- the CANCEL until its 200 came in (Timer E)
      one_until(log, tr[1], { "out", "^CANCEL " }, { "in", "^SIP/2%.0 200 ", "CANCEL" })
      assert.are.equal(1, count(log, "in", "^SIP/2%.0 200 ", "INVITE"), ladder(log))
      assert.are.equal(1, count(log, "out", "^ACK "), ladder(log))
      -- the BYE until its 200 came in
      one_until(log, tr[1], { "out", "^BYE " }, { "in", "^SIP/2%.0 200 ", "BYE" })
      -- ACK before BYE
      local ack_at, bye_at
      for i, m in ipairs(log) do
        if m.first:match("^ACK ") then ack_at = i end
        if m.first:match("^BYE ") and not bye_at then bye_at = i end
      end
      assert.is_true(ack_at < bye_at)
      assert.is_true((helper.idle(ua, 10)))
      assert.are.equal(0, ua:stats().calls)
      assert.are.equal(0, ua:stats().dialogs)
      stalled(stall, log)
    end)
  end
end)
