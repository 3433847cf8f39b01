--- The B2BUA (sip.b2bua, sip.bridge) between real peers: SIPp uac ->
-- luasip -> SIPp uas (calls at a rate, hold passing through, CANCEL while
-- B rings, BYE from B, a re-INVITE B never answers), media relayed from
-- SIPp's pcap to a luasip recorder, forking, failures mapped to A, and
-- the mistakes that raise.
local sip = require "sip"
local helper = require "helper"

local MEDIA = { ports = "42000-42999" }
-- an offer for callers without media settings (RTP to a port nobody reads)
local OFFER = table.concat({ "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1",
                             "t=0 0", "m=audio 45000 RTP/AVP 0", "a=rtpmap:0 PCMU/8000", "" }, "\r\n")

describe("B2BUA", function()
  local ua = helper.uas(after_each)
  after_each(function() helper.stop_all() end)

  -- a B2BUA UA sending each call to target(call) (a URI or a list);
  -- results[i] = { sip.b2bua's returns }
  local function b2bua(target, opts, ua_opts)
    local mid = ua(ua_opts)
    local results = {}
    mid:on("INVITE", function(call)
      local r = { sip.b2bua(call, type(target) == "function" and target(call) or target, opts) }
      results[#results + 1] = r
    end)
    return mid, results
  end

  local function hostport(u) return (u:address():match(":(.*)$")) end

  it("carries SIPp's calls at a rate to a SIPp uas, none failed", function()
    local uas_port = helper.free_port()
    local uas = helper.sipp{ sn = "uas", port = uas_port, args = { "-m", 100 } }
    local mid = b2bua("sip:service@127.0.0.1:" .. uas_port)
    local uac = helper.sipp{ sn = "uac", port = helper.free_port(), remote = hostport(mid),
                             args = { "-m", 100, "-r", 50, "-timeout", "60", "-timeout_error" } }
    assert.are.equal(0, uac:wait(60), uac.log())
    assert.are.equal(0, uas:wait(30), uas.log())
  end)

  it("passes hold and resume through, media anchored", function()
    local uas_port = helper.free_port()
    local uas = helper.sipp{ sf = "uas_hold.xml", port = uas_port, args = { "-m", 1 } }
    local mid, results = b2bua("sip:service@127.0.0.1:" .. uas_port, { media = "relay" },
                               { listen = "udp:127.0.0.1:0", media = MEDIA })
    local uac = helper.sipp{ sf = "uac_reinvite_hold.xml", port = helper.free_port(),
                             remote = hostport(mid), args = { "-m", 1, "-s", "bob" } }
    assert.are.equal(0, uac:wait(30), uac.log())
    assert.are.equal(0, uas:wait(30), uas.log())
    helper.run(function() sip.sleep(0.2) end)
    assert.are.same({ "a", "bye" }, results[1])
  end)

  it("CANCELs B when A gives up while B rings", function()
    local uas_port = helper.free_port()
    local uas = helper.sipp{ sf = "uas_ring_cancel.xml", port = uas_port, args = { "-m", 1 } }
    local mid, results = b2bua("sip:service@127.0.0.1:" .. uas_port)
    local uac = helper.sipp{ sf = "uac_cancel.xml", port = helper.free_port(), remote = hostport(mid),
                             args = { "-m", 1, "-s", "bob" } }
    assert.are.equal(0, uac:wait(30), uac.log())
    assert.are.equal(0, uas:wait(30), uas.log())
    helper.run(function() sip.sleep(0.2) end)
    assert.is_nil(results[1][1])
    assert.are.equal("cancel", results[1][2])
  end)

  it("hangs up A when B sends BYE", function()
    local uas_port = helper.free_port()
    local uas = helper.sipp{ sf = "uas_answer_then_bye.xml", port = uas_port, args = { "-m", 1 } }
    local mid, results = b2bua("sip:service@127.0.0.1:" .. uas_port)
    helper.run(function()
      local call = assert(ua():invite(mid:uri("bob"), { sdp = OFFER }))
      assert.are.equal("bye", call:wait(20))
      sip.sleep(0.2)
    end, 30)
    assert.are.equal(0, uas:wait(15), uas.log())
    assert.are.same({ "b", "bye" }, results[1])
  end)

  it("releases both legs when B never answers a re-INVITE", function()
    local uas_port = helper.free_port()
    local uas = helper.sipp{ sf = "uas_ignore_reinvite.xml", port = uas_port, args = { "-m", 1 } }
    local mid = b2bua("sip:service@127.0.0.1:" .. uas_port, { request_timeout = 2 })
    helper.run(function()
      local call = assert(ua():invite(mid:uri("bob"), { sdp = OFFER }))
      local res, err = call:hold()
      assert.is_nil(res)
      assert.matches("^408", err)
      assert.are.equal("bye", call:wait(20))
    end, 40)
    assert.are.equal(0, uas:wait(15), uas.log())
  end)

  it("relays SIPp's pcap audio to a recorder on the B leg, PCMA to PCMU", function()
    local rec = helper.tmp .. "/b2bua-rec-" .. math.random(1, 1e9) .. ".wav"
    finally(function() os.remove(rec) end)
    local callee = ua{ listen = "udp:127.0.0.1:0", media = { ports = "43000-43999", codecs = { "PCMU" } } }
    local got = {}
    callee:on("INVITE", function(call)
      assert(call:answer())
      got.rec = call:record(rec, { max = 30 })
    end)
    local mid, results = b2bua(callee:uri("carol"), { media = "relay" },
                               { listen = "udp:127.0.0.1:0", media = MEDIA })
    local sipp = helper.sipp{ sf = "uac_pcap_audio.xml", port = helper.free_port(), remote = hostport(mid),
                              args = { "-m", 1, "-s", "ivr", "-mp", helper.free_port(),
                                       "-timeout", "30", "-timeout_error" } }
    assert.are.equal(0, sipp:wait(40), sipp.log())
    helper.run(function() sip.sleep(0.5) end)
    assert.are.same({ "a", "bye" }, results[1])
    assert.truthy(got.rec, "nothing recorded")
    assert.are.equal("hangup", got.rec.reason)
    local d, rms = helper.sound(rec)
    assert.is_true(d > 4, "recorded " .. d .. " s")
    assert.is_true(rms > 0.01, "rms " .. rms)
  end)

  it("relays RFC 4733 key presses (its payload type mapped) and INFO to the B leg", function()
    local callee = ua{ listen = "udp:127.0.0.1:0", media = { ports = "43000-43999" } }
    local got, n = {}, 0
    callee:on("INVITE", function(call)
      assert(call:answer())
      n = n + 1
      if n == 1 then     -- SIPp's key presses
        got.digits = { call:collect{ max = 12, terminators = "", timeout = 10, interdigit = 5 } }
      else               -- INFOs from a luasip caller
        got.info = { call:collect{ max = 2, terminators = "", timeout = 10 } }
      end
    end)
    local mid = b2bua(callee:uri("ivr"), { media = "relay" },
                      { listen = "udp:127.0.0.1:0", media = MEDIA })
    local sipp = helper.sipp{ sf = "uac_dtmf_2833_pcaps.xml", port = helper.free_port(),
                              remote = hostport(mid),
                              args = { "-m", 1, "-s", "ivr", "-mp", helper.free_port(),
                                       "-timeout", "60", "-timeout_error" } }
    assert.are.equal(0, sipp:wait(60), sipp.log())
    assert.are.same({ "0123456789*#" }, got.digits)
    -- INFO (application/dtmf-relay) from a luasip caller
    helper.run(function()
      local call = assert(ua():invite(mid:uri("ivr"), { sdp = OFFER }))
      for _, k in ipairs{ "4", "2" } do
        local res = assert(call:request("INFO", { body = "Signal=" .. k .. "\r\nDuration=160\r\n",
                                                  content_type = "application/dtmf-relay" }))
        assert.are.equal(200, res.status)
      end
      sip.sleep(0.3)
      call:hangup()
    end, 30)
    assert.are.same({ "42" }, got.info)
  end)

  it("carries PRACK on both legs: SIPp requiring 100rel, a callee ringing reliably", function()
    local callee = ua()
    callee:on("INVITE", function(call)
      assert(call:ring{ reliable = true })
      local answer = OFFER:gsub("45000", "6000")     -- the answer the scenario looks for
      assert(call:progress{ reliable = true, sdp = answer })
      assert(call:answer())
      call:wait(10)
    end)
    local mid, results = b2bua(callee:uri("bob"), { media = "direct" })
    local uac = helper.sipp{ sf = "uac_prack_require.xml", port = helper.free_port(),
                             remote = hostport(mid), args = { "-m", 1, "-s", "bob" } }
    assert.are.equal(0, uac:wait(30), uac.log())
    helper.run(function() sip.sleep(0.2) end)
    assert.are.same({ "a", "bye" }, results[1])
  end)

  it("keeps the A leg's session timer: its refresh answered, its expiry ends both legs", function()
    local callee = ua()
    local b_why = {}
    callee:on("INVITE", function(call) assert(call:answer()); b_why[1] = call:wait(30) end)
    local mid, results = b2bua(callee:uri("bob"), { media = "direct" },
                               { listen = "udp:127.0.0.1:0", session_timer = { min_se = 1 } })
    local uac = helper.sipp{ sf = "uac_session_timer.xml", port = helper.free_port(),
                             remote = hostport(mid), args = { "-m", 1, "-s", "bob" } }
    assert.are.equal(0, uac:wait(30), uac.log())
    helper.run(function() sip.sleep(0.3) end)
    assert.are.same({ "a", "session-expired" }, results[1])
    assert.are.same({ "bye" }, b_why)
  end)

  it("forks to several B legs: the first answer wins, failures reach A", function()
    local busy, answers = ua(), ua()
    busy:on("INVITE", function() return 486 end)
    local answered = {}
    answers:on("INVITE", function(call)
      call:ring()
      sip.sleep(0.3)
      assert(call:answer())
      answered[#answered + 1] = call
      call:wait(10)
    end)
    local mid, results = b2bua(function(call)
      return call.invite.to_uri:find("^sip:both") and { busy:uri("x"), answers:uri("y") } or
             { busy:uri("x"), busy:uri("z") }
    end)
    helper.run(function()
      local call = assert(ua():invite(mid:uri("both"), { sdp = OFFER }))
      assert.are.equal("confirmed", call.state)
      call:hangup()
      local none, err = ua():invite(mid:uri("none"), { sdp = OFFER })
      assert.is_nil(none)
      assert.are.equal("486 Busy Here", err)
      sip.sleep(0.3)
    end, 30)
    assert.are.equal(1, #answered)
    assert.are.same({ "a", "bye" }, results[1])     -- A sent BYE
    assert.are.equal("486 Busy Here", results[2][2])
  end)

  it("gives A the B leg's 488 when the codecs do not meet", function()
    local pcma = ua{ listen = "udp:127.0.0.1:0", media = { ports = "44000-44999", codecs = { "PCMA" } } }
    pcma:on("INVITE", function(call) call:answer() end)
    local mid = b2bua(pcma:uri("c"), { media = "direct" })
    helper.run(function()
      local call, err = ua():invite(mid:uri("bob"), { sdp = OFFER })
      assert.is_nil(call)
      assert.matches("^488", err)
    end, 20)
  end)

  it("raises on a call bridged to itself, an ended call, a wrong option", function()
    local callee = ua()
    callee:on("INVITE", function(call) call:answer(); call:wait(5) end)
    helper.run(function()
      local c = assert(ua():invite(callee:uri("x")))
      helper.raises("sip.bridge.*itself", function() sip.bridge(c, c) end)
      helper.raises("sip.bridge.*sip.Call", function() sip.bridge(c, 42) end)
      local d = assert(ua():invite(callee:uri("y")))
      helper.raises("sip.bridge.*media", function() sip.bridge(c, d, { media = "bogus" }) end)
      helper.raises("sip.bridge.*nope", function() sip.bridge(c, d, { nope = 1 }) end)
      d:hangup()
      helper.raises("sip.bridge.*ended", function() sip.bridge(c, d) end)
      helper.raises("sip.b2bua.*sip.Call", function() sip.b2bua("x", "sip:y@127.0.0.1") end)
      c:hangup()
    end, 20)
  end)

  it("unbridges without hanging up, and bridges again", function()
    local callee = ua()
    local ended = {}
    callee:on("INVITE", function(call) call:answer(); ended[#ended + 1] = call:wait(20) end)
    helper.run(function()
      local a = assert(ua():invite(callee:uri("a")))
      local b = assert(ua():invite(callee:uri("b")))
      local br = sip.bridge(a, b)
      assert.are.equal("direct", br.media)
      sip.spawn(function() sip.sleep(0.2); br:unbridge() end)
      assert.are.same({ nil, "unbridged" }, { br:wait(5) })
      assert.are.equal("confirmed", a.state)
      assert.are.equal("confirmed", b.state)
      br = sip.bridge(a, b)
      assert.are.same({ nil, "timeout" }, { br:wait(0.2) })
      a:hangup()
      assert.are.same({ "a", "hangup" }, { br:wait(5) })   -- no timeout: ended by a
      assert.are.equal("hangup", b:wait(5))   -- the bridge hung it up
    end, 30)
  end)
end)
