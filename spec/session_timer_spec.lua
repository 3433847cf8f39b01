--- Session timers (RFC 4028) and UPDATE (RFC 3311): the UAS side against
-- a SIPp caller that refreshes once then stops (the callee hangs up), the
-- UAC side against a SIPp callee that first answers 422, luasip to luasip
-- refreshes by UPDATE, call:update's offer and answer, the mistakes.
local sip = require "sip"
local helper = require "helper"

local OFFER = table.concat({ "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1",
                             "t=0 0", "m=audio 45000 RTP/AVP 0", "a=rtpmap:0 PCMU/8000", "" }, "\r\n")
-- short sessions for a spec: RFC 4028's 90 s floor lowered on these UAs
local SHORT = { listen = "udp:127.0.0.1:0", session_timer = { min_se = 1 } }

describe("session timers", function()
  local ua = helper.uas(after_each)
  after_each(function() helper.stop_all() end)

  it("hangs up a SIPp caller that stops refreshing, after answering its refresh", function()
    local callee = ua(SHORT)
    local got = {}
    callee:on("INVITE", function(call)
      assert(call:answer())
      got.why = call:wait(30)
    end)
    local sipp = helper.sipp{ sf = "uac_session_timer.xml", port = helper.free_port(),
                              remote = callee:address():match(":(.*)$"), args = { "-m", 1, "-s", "bob" } }
    assert.are.equal(0, sipp:wait(30), sipp.log())
    helper.run(function() sip.sleep(0.2) end)
    assert.are.equal("session-expired", got.why)
  end)

  it("follows a 422 and refreshes by UPDATE as the SIPp callee asks", function()
    local port = helper.free_port()
    local sipp = helper.sipp{ sf = "uas_session_timer.xml", port = port, args = { "-m", 1 } }
    helper.run(function()
      local call = assert(ua(SHORT):invite("sip:bob@127.0.0.1:" .. port, { sdp = OFFER, session_expires = 1 }))
      assert.matches("^2;refresher=uac", call.response:header("Session-Expires"))
      sip.sleep(1.5)                       -- past the refresh at 1 s
      call:hangup()
    end, 30)
    assert.are.equal(0, sipp:wait(15), sipp.log())
  end)

  it("luasip to luasip: the caller refreshes by UPDATE, the call lives on; 422 when too short", function()
    local callee = ua(SHORT)
    local got = {}
    callee:on("INVITE", function(call)
      assert(call:answer())
      got.why = call:wait(30)
    end)
    helper.run(function()
      local call = assert(ua(SHORT):invite(callee:uri("x"), { sdp = OFFER, session_expires = 6 }))
      assert.are.equal("6;refresher=uac", call.response:header("Session-Expires"))
      assert.are.equal("timer", call.response:header("Require"))
      sip.sleep(7)                         -- refreshed at 3 and 6 s; the callee's limit is 4 s
      assert.is_true(call._se.refreshes >= 1)
      assert.are.equal("confirmed", call.state)
      call:hangup()
      sip.sleep(0.2)
      assert.are.equal("bye", got.why)
      -- no timer asked: none runs, and an INVITE asking too short a one gets 422
      local plain = assert(ua():invite(callee:uri("y"), { sdp = OFFER }))
      assert.is_nil(plain.response:header("Session-Expires"))
      plain:hangup()
      local strict = ua()                  -- min_se 90: 10 s is too short
      strict:on("INVITE", function(c) c:answer() end)
      local none, err, res = ua(SHORT):invite(strict:uri("z"), {
        sdp = OFFER, headers = { ["Session-Expires"] = "10" } })
      assert.is_nil(none)
      assert.matches("^422", err)
      assert.are.equal("90", res:header("Min-SE"))
    end, 30)
  end)

  it("call:update changes the session with an offer and takes the answer", function()
    local callee = ua()
    local seen = {}
    callee:on("INVITE", function(call)
      assert(call:answer())
      call:on("update", function(_, req) seen[#seen + 1] = req.body end)
      call:wait(10)
    end)
    helper.run(function()
      local call = assert(ua():invite(callee:uri("x"), { sdp = OFFER }))
      local newer = OFFER:gsub("45000", "45002"):gsub("1 1 IN", "1 2 IN")
      local res = assert(call:update{ sdp = newer })
      assert.are.equal(200, res.status)
      assert.are.equal(newer, call.local_sdp)
      assert.are.equal(res.body, call.remote_sdp_text)
      helper.raises("call:update.*bogus", function() call:update{ bogus = 1 } end)
      call:hangup()
      local ok, err = call:update{ sdp = newer }
      assert.is_nil(ok)
      assert.are.equal("call is ended", err)
    end, 20)
    assert.matches("45002", seen[1])
  end)
end)
