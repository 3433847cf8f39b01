--- Digits and waiting on several things (issue 15): DTMF by SIP INFO
-- into call:collect and call:on("dtmf"), call:send_dtmf by INFO between
-- two UAs, sip.first, and a call's waits ending with the call.
local sip = require "sip"
local core = require "sip.core"
local helper = require "helper"

local ua = helper.uas(after_each)
after_each(helper.stop_all)

local OFFER = sip.sdp.offer{ addr = "127.0.0.1", port = 4000, codecs = { "PCMU" } }

-- an IVR on `ivr` running `flow(call)`, called by `caller`; `dial(call)`
-- runs on the caller's side once answered. Returns what flow returned.
local function call_flow(flow, dial, timeout)
  local ivr, caller = ua(), ua()
  local got = {}
  ivr:on("INVITE", function(call)
    assert(call:answer())
    got.result = table.pack(flow(call))
    got.ended = call.state == "ended"
    if call.state ~= "ended" then call:hangup() end
  end)
  helper.run(function()
    local call = assert(caller:invite(ivr:uri("ivr"), { sdp = OFFER, timeout = 5 }))
    dial(call)
    call:wait(timeout or 10)
  end, 30)
  return table.unpack(got.result or {}, 1, got.result and got.result.n or 0)
end

local function info(call, digit, ctype)
  return call:request("INFO", { content_type = ctype or "application/dtmf-relay",
                                body = "Signal=" .. digit .. "\r\nDuration=100\r\n" })
end

describe("DTMF by SIP INFO", function()
  it("collects 1234 ended by #, from dtmf-relay and application/dtmf", function()
    local digits, err = call_flow(function(call)
      return call:collect{ min = 4, max = 8, timeout = 5 }
    end, function(call)
      for _, d in ipairs{ "1", "2" } do assert.are.equal(200, info(call, d).status) end
      assert.are.equal(200, call:request("INFO", { content_type = "application/dtmf", body = "3" }).status)
      assert.are.equal(200, info(call, "4").status)
      assert.are.equal(200, info(call, "11").status)   -- Signal=11 is #
    end)
    assert.are.equal("1234", digits, err)
  end)

  it("send_dtmf without media sends INFO, and call:on('dtmf') sees each digit", function()
    local seen = {}
    local digits = call_flow(function(call)
      call:on("dtmf", function(_, d, source) seen[#seen + 1] = d .. "/" .. source end)
      return call:collect{ max = 3, terminators = "" }
    end, function(call)
      assert.is_true(call:send_dtmf("9*A"))
    end)
    assert.are.equal("9*A", digits)
    assert.are.same({ "9/info", "*/info", "A/info" }, seen)
  end)

  it("times out, retries and checks the pattern", function()
    local r1, e1 = call_flow(function(call)
      return call:collect{ min = 2, timeout = 0.3, retries = 2 }
    end, function() end)
    assert.is_nil(r1)
    assert.are.equal("timeout", e1)
    local r2, e2 = call_flow(function(call)
      return call:collect{ max = 2, pattern = "^1", retries = 1 }
    end, function(call) info(call, "2"); info(call, "2") end)
    assert.is_nil(r2)
    assert.are.equal("invalid", e2)
    -- interdigit: two digits then a pause end the try with what was typed
    local r3 = call_flow(function(call)
      return call:collect{ max = 5, interdigit = 0.4 }
    end, function(call) info(call, "7"); info(call, "8") end)
    assert.are.equal("78", r3)
  end)

  it("answers an unreadable DTMF body 400, and ignores other INFO bodies", function()
    local statuses = {}
    call_flow(function(call) return call:collect{ max = 1, timeout = 2 } end, function(call)
      statuses[1] = info(call, "zz").status
      statuses[2] = call:request("INFO", { content_type = "text/plain", body = "hello" }).status
      statuses[3] = info(call, "5").status
    end)
    assert.are.same({ 400, 200, 200 }, statuses)
  end)

  it("keeps at most 64 digits of a flood, and works after", function()
    local got = call_flow(function(call)
      sip.sleep(1.5)                      -- the flood arrives meanwhile
      local first = call:collect{ max = 100, terminators = "", interdigit = 0.2 }
      return first
    end, function(call)
      for _ = 1, 80 do info(call, "1") end
    end)
    assert.are.equal(string.rep("1", 64), got)
  end)

  it("raises on bad digits and options, naming call:send_dtmf and call:collect", function()
    call_flow(function(call)
      helper.raises("'call:send_dtmf'", call.send_dtmf, call, "12x")
      helper.raises("'call:collect' %(unknown option 'maxx'%)", call.collect, call, { maxx = 1 })
      helper.raises("'call:collect'", call.collect, call, { min = 3, max = 2 })
    end, function() end)
  end)
end)

describe("sip.first", function()
  it("returns the index and results of the first branch; the others are cancelled", function()
    local a = ua()
    a:on("MESSAGE", function() sip.sleep(3); return 200 end)
    local b = ua()
    helper.run(function()
      local cancelled = {}
      local t0 = core.now()
      local i, x, y = sip.first(
        function()
          local ok, why = sip.sleep(5)
          cancelled.sleep = { ok, why }
          return "slept"
        end,
        function() sip.sleep(0.2); return "quick", 42 end,
        function()
          cancelled.request = { b:request("MESSAGE", a:uri(), { body = "x" }) }
          return "request"
        end)
      assert.are.equal(2, i)
      assert.are.equal("quick", x)
      assert.are.equal(42, y)
      assert.is_true(core.now() - t0 < 2)
      sip.sleep(0.05)
      assert.are.same({ nil, "cancelled" }, cancelled.sleep)
      assert.are.same({ nil, "cancelled" }, cancelled.request)
    end)
  end)

  it("a branch that returns at once wins without waiting", function()
    helper.run(function()
      local i, v = sip.first(function() return "now" end, function() sip.sleep(5) end)
      assert.are.equal(1, i)
      assert.are.equal("now", v)
    end)
  end)

  it("CANCELs an INVITE that loses", function()
    local callee = ua()
    local callee_saw
    callee:on("INVITE", function(call)
      call:ring()
      callee_saw = call:wait(10)
    end)
    local caller = ua()
    helper.run(function()
      local i = sip.first(function() return caller:invite(callee:uri(), { sdp = OFFER }) end,
                          function() sip.sleep(0.3); return "bored" end)
      assert.are.equal(2, i)
      sip.sleep(0.3)
      assert.are.equal("cancel", callee_saw)
    end)
  end)

  it("raises a branch's error with its traceback", function()
    local ok, err = pcall(helper.run, function()
      sip.first(function() sip.sleep(0.05); error("boom") end, function() sip.sleep(5) end)
    end)
    assert.is_false(ok)
    assert.matches("boom", err)
  end)
end)

describe("a call's waits end with the call", function()
  local function hangup_during(wait_fn)
    local ivr, caller = ua(), ua()
    local got = {}
    ivr:on("INVITE", function(call)
      assert(call:answer())
      local t0 = core.now()
      got.result = table.pack(wait_fn(call))
      got.took = core.now() - t0
      -- a later wait works as usual
      got.later = { sip.sleep(0.01) }
    end)
    helper.run(function()
      local call = assert(caller:invite(ivr:uri("ivr"), { sdp = OFFER, timeout = 5 }))
      sip.sleep(0.3)
      call:hangup()
      sip.sleep(0.3)
    end, 20)
    assert.are.equal(nil, got.result[1])
    assert.are.equal("hangup", got.result[2])
    assert.is_true(got.took < 2, "took " .. got.took)
    assert.are.same({ true }, got.later)
  end

  it("sip.sleep in the handler", function()
    hangup_during(function() return sip.sleep(5) end)
  end)

  it("call:collect", function()
    hangup_during(function(call) return call:collect{ timeout = 5 } end)
  end)

  it("a request of the handler's own", function()
    local slow = ua()
    slow:on("OPTIONS", function() sip.sleep(4); return 200 end)
    hangup_during(function(call)
      return call.ua:request("OPTIONS", slow:uri())
    end)
  end)

  it("an INVITE the handler places (a B2BUA's B leg), which is CANCELled", function()
    local b_leg = ua()
    local b_saw
    b_leg:on("INVITE", function(call) call:ring(); b_saw = call:wait(10) end)
    hangup_during(function(call)
      return call.ua:invite(b_leg:uri(), { sdp = OFFER })
    end)
    helper.spin(0.3)
    assert.are.equal("cancel", b_saw)
  end)

  it("a coroutine spawned by the handler", function()
    local ivr, caller = ua(), ua()
    local got = {}
    ivr:on("INVITE", function(call)
      assert(call:answer())
      sip.spawn(function() got.child = { sip.sleep(5) } end)
      call:wait()
    end)
    helper.run(function()
      local call = assert(caller:invite(ivr:uri("ivr"), { sdp = OFFER, timeout = 5 }))
      sip.sleep(0.2)
      call:hangup()
      sip.sleep(0.2)
    end, 20)
    assert.are.same({ nil, "hangup" }, got.child)
  end)
end)

describe("DTMF in the media (calls with media settings)", function()
  local MEDIA = { addr = "127.0.0.1", ports = "50000-50999" }

  local function media_ua(codecs)
    return ua{ listen = "udp:127.0.0.1:0",
               media = { addr = MEDIA.addr, ports = MEDIA.ports, codecs = codecs } }
  end

  it("send_dtmf goes by RFC 4733 when negotiated, and collect gets the digits", function()
    local ivr, caller = media_ua(), media_ua()
    local got, sources = {}, {}
    ivr:on("INVITE", function(call)
      assert(call:answer())
      call:on("dtmf", function(_, _, source) sources[source] = (sources[source] or 0) + 1 end)
      got.digits = { call:collect{ max = 8, timeout = 10 } }
      got.stats = call.media:stats()
      call:hangup()
    end)
    helper.run(function()
      local call = assert(caller:invite(ivr:uri("ivr"), { timeout = 5 }))
      -- the IVR hangs up at the "#", maybe before its last end packet
      call:send_dtmf("1234#")
      assert.are.equal("bye", call:wait(10))
    end, 30)
    assert.are.same({ "1234" }, got.digits)
    assert.are.same({ rfc4733 = 5 }, sources)
    assert.are.equal(5, got.stats.dtmf_received)
  end)

  it("inband tones are heard when the caller negotiated no telephone-event", function()
    local ivr, caller = media_ua(), media_ua({ "PCMU" })
    local got = {}
    ivr:on("INVITE", function(call)
      assert(call:answer())
      call:on("dtmf", function(_, _, source) got.source = source end)
      got.digits = { call:collect{ max = 4, timeout = 10 } }
      call:hangup()
    end)
    helper.run(function()
      local call = assert(caller:invite(ivr:uri("ivr"), { timeout = 5 }))
      assert.is_nil(call.media:dtmf_pt())
      call:send_dtmf("2580", { method = "inband" })
      call:wait(10)
    end, 30)
    assert.are.same({ "2580" }, got.digits)
    assert.are.equal("inband", got.source)
  end)

  it("a digit stops a prompt played with barge, and stays for the collect", function()
    local ivr, caller = media_ua(), media_ua()
    local long = helper.tmp .. "/dtmf-long.wav"
    helper.sh("sox -n -r 8000 -c 1 -b 16 '" .. long .. "' synth 10 sine 440 vol 0.3")
    local got = {}
    ivr:on("INVITE", function(call)
      assert(call:answer())
      local t0 = require("sip.core").now()
      got.play = { call:play(long, { barge = true }) }
      got.took = require("sip.core").now() - t0
      got.digits = call:collect{ max = 1, timeout = 5 }
      call:hangup()
    end)
    helper.run(function()
      local call = assert(caller:invite(ivr:uri("ivr"), { timeout = 5 }))
      sip.sleep(0.5)
      call:send_dtmf("7")
      call:wait(10)
    end, 30)
    assert.are.same({ nil, "digit", "7" }, got.play)
    assert.is_true(got.took < 2, "took " .. got.took)
    assert.are.equal("7", got.digits)
  end)

  it("collects SIPp's RFC 4733 pcaps (0-9, *, #), each once", function()
    local ivr = media_ua()
    local got = {}
    ivr:on("INVITE", function(call)
      assert(call:answer())
      got.digits = { call:collect{ max = 12, terminators = "", timeout = 10, interdigit = 5 } }
    end)
    local port = tonumber(ivr:address():match(":(%d+)$"))
    local sipp = helper.sipp{ sf = "uac_dtmf_2833_pcaps.xml", port = helper.free_port(),
                              remote = "127.0.0.1:" .. port,
                              args = { "-m", 1, "-s", "ivr", "-mp", helper.free_port(),
                                       "-timeout", "60", "-timeout_error" } }
    assert.are.equal(0, sipp:wait(60), sipp.log())
    assert.are.same({ "0123456789*#" }, got.digits)
  end)
end)
