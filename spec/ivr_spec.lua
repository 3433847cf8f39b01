--- Calls with media (sip.ua{ media = ... }): call:play, call:record and
-- call:tone on the call's own RTP session, early media, hold moving the
-- session, the sockets closed however the call ends, and the IVR example
-- called by SIPp playing recorded speech (g711a.pcap).
local sip = require "sip"
local core = require "sip.core"
local helper = require "helper"

local DIR = helper.tmp .. "/ivr"
os.execute("mkdir -p '" .. DIR .. "'")

local sh, sound = helper.sh, helper.sound

local function tone(name, freq, secs)
  local path = DIR .. "/" .. name .. ".wav"
  sh("sox -n -r 8000 -c 1 -b 16 '" .. path .. "' synth " .. secs .. " sine " .. freq .. " vol 0.5")
  return path
end

local MEDIA = { addr = "127.0.0.1", ports = "40000-49999" }

local ua = helper.uas(after_each, { listen = "udp:127.0.0.1:0", media = MEDIA })
after_each(helper.stop_all)

describe("a call with media", function()
  it("the caller hears the IVR's prompt, and the IVR records the caller", function()
    local prompt = tone("prompt", 1000, 2)
    local heard, recorded = DIR .. "/heard.wav", DIR .. "/recorded.wav"
    local ivr, caller = ua(), ua()
    local got = {}
    ivr:on("INVITE", function(call)
      assert(call:answer())
      got.play = { call:play(prompt) }
      got.rec = call:record(recorded, { max = 1.5 })
      got.codec = call.media:stats().codec
      call:hangup()
    end)
    helper.run(function()
      local call = assert(caller:invite(ivr:uri("ivr"), { timeout = 5 }))
      got.heard = call:record(heard, { max = 10 })    -- until the IVR hangs up
      assert.are.equal("hangup", got.heard.reason)
      got.ended = call.ended_why
    end, 20)
    assert.are.same({ true }, got.play)
    assert.are.equal("PCMU", got.codec)
    assert.are.equal("bye", got.ended)
    local d, rms, freq = sound(heard)
    assert.is_true(d > 1.9, "heard " .. d .. " s")
    assert.is_true(rms > 0.05, "heard rms " .. rms)
    assert.is_true(math.abs(freq - 1000) < 60, "heard " .. freq .. " Hz")
    -- the caller sent nothing: the recording ends at its max
    assert.are.equal("max", got.rec.reason)
    assert.are.equal(0, core.media.count())
  end)

  it("records what the caller plays, at the caller's codec", function()
    local voice = tone("voice440", 440, 2)
    local recorded = DIR .. "/recorded440.wav"
    local ivr = ua()
    local caller = ua{ listen = "udp:127.0.0.1:0",
                       media = { addr = "127.0.0.1", ports = MEDIA.ports, codecs = { "PCMA" } } }
    local got = {}
    ivr:on("INVITE", function(call)
      assert(call:answer())
      got.rec = call:record(recorded, { max = 5, silence = 0.5 })
      got.codec = call.media:stats().codec
      call:hangup()
    end)
    helper.run(function()
      local call = assert(caller:invite(ivr:uri("ivr"), { timeout = 5 }))
      got.play = { call:play(voice) }
      call:wait(10)
    end, 20)
    assert.are.same({ true }, got.play)
    assert.are.equal("PCMA", got.codec)
    assert.are.equal("silence", got.rec.reason)
    local d, rms, freq = sound(recorded)
    assert.is_true(d > 1.9 and d < 3, "recorded " .. d .. " s")
    assert.is_true(rms > 0.05, "rms " .. rms)
    assert.is_true(math.abs(freq - 440) < 40, freq .. " Hz")
  end)

  it("plays early media after call:progress(), before the answer", function()
    local prompt = tone("early-prompt", 1000, 1)
    local heard = DIR .. "/early-heard.wav"
    local ivr, caller = ua(), ua()
    local got = {}
    ivr:on("INVITE", function(call)
      assert(call:progress())
      got.play = { call:play(prompt) }
      got.state_while_playing = call.state
      assert(call:answer())
      call:wait(5)
    end)
    helper.run(function()
      local call = assert(caller:invite(ivr:uri("ivr"), { timeout = 10,
        on_call = function(c) got.early = c:record(heard, { max = 0.8 }) end }))
      assert.are.equal("max", got.early.reason)
      call:hangup()
    end, 20)
    assert.are.same({ true }, got.play)
    assert.are.equal("early", got.state_while_playing)
    local _, rms, freq = sound(heard)
    assert.is_true(rms > 0.05, "rms " .. rms)
    assert.is_true(math.abs(freq - 1000) < 60, freq .. " Hz")
  end)

  it("plays a tone, and hold stops the held side's sending", function()
    local ivr, caller = ua(), ua()
    local got = {}
    ivr:on("INVITE", function(call)
      assert(call:answer())
      got.tone = { call:tone("busy", { duration = 0.5 }) }
      got.ivr_call = call
      call:wait(10)
    end)
    helper.run(function()
      local call = assert(caller:invite(ivr:uri("ivr"), { timeout = 5 }))
      sip.sleep(0.8)
      assert(call:hold())
      sip.sleep(0.1)
      got.held_dir = got.ivr_call.media:direction()
      got.held_tone = { got.ivr_call:tone("ring", { duration = 0.3 }) }
      local before = got.ivr_call.media:stats().packets_sent
      got.sent_on_hold = before
      assert(call:unhold())
      sip.sleep(0.1)
      got.resumed_dir = got.ivr_call.media:direction()
      call:hangup()
    end, 20)
    assert.are.same({ true }, got.tone)
    assert.are.equal("recvonly", got.held_dir)
    assert.are.equal("sendrecv", got.resumed_dir)
    assert.are.equal(0, core.media.count())
  end)

  it("a play pending when the caller hangs up returns nil, \"hangup\"", function()
    local long = tone("long", 500, 10)
    local ivr, caller = ua(), ua()
    local got = {}
    ivr:on("INVITE", function(call)
      assert(call:answer())
      got.play = { call:play(long) }
      got.after = { call:play(long) }     -- the call is over: at once
    end)
    helper.run(function()
      local call = assert(caller:invite(ivr:uri("ivr"), { timeout = 5 }))
      sip.sleep(0.5)
      call:hangup()
      sip.sleep(0.2)
    end, 20)
    assert.are.same({ nil, "hangup" }, got.play)
    assert.are.same({ nil, "hangup" }, got.after)
    assert.are.equal(0, core.media.count())
  end)

  it("a record pending when the caller hangs up ends at once with reason \"hangup\"", function()
    local ivr, caller = ua(), ua()
    local got = {}
    ivr:on("INVITE", function(call)
      assert(call:answer())
      local t0 = core.now()
      got.rec = call:record(DIR .. "/cut.wav", { max = 10 })
      got.took = core.now() - t0
    end)
    helper.run(function()
      local call = assert(caller:invite(ivr:uri("ivr"), { timeout = 5 }))
      sip.sleep(0.5)
      call:hangup()
      sip.sleep(0.2)
    end, 20)
    assert.are.equal("hangup", got.rec.reason)
    assert.is_true(got.took < 2, "took " .. got.took)
  end)

  it("closes the session's sockets after CANCEL, a failed call, a timeout and ua:close", function()
    local ivr, caller = ua(), ua()
    ivr:on("INVITE", function(call)
      if call.invite.uri:find("busy") then return 486 end
      call:progress()
      call:wait(5)                         -- rings until CANCEL or the UA closes
    end)
    helper.run(function()
      -- timeout: CANCEL
      assert.are.same({ nil, "timeout" }, { caller:invite(ivr:uri("ring"), { timeout = 0.5 }) })
      sip.sleep(0.3)
      assert.are.equal(0, core.media.count())
      -- a failure
      local call, err = caller:invite(ivr:uri("busy"), { timeout = 5 })
      assert.is_nil(call)
      assert.matches("^486", err)
      sip.sleep(0.1)
      assert.are.equal(0, core.media.count())
      -- ua:close with a call up
      local other = ua()
      other:on("INVITE", function(c) c:answer(); c:wait() end)
      call = assert(caller:invite(other:uri("x"), { timeout = 5 }))
      assert.are.equal(2, core.media.count())
      other:close()
      sip.sleep(0.3)
      assert.are.equal("ended", call.state)
    end, 20)
    assert.are.equal(0, core.media.count())
  end)

  it("a call without media settings raises on call:play", function()
    local a = ua{ listen = "udp:127.0.0.1:0" }
    local b = ua{ listen = "udp:127.0.0.1:0" }
    local err
    a:on("INVITE", function(call)
      call:answer()
      local ok, e = pcall(call.play, call, "x.wav")
      err = not ok and e
      call:hangup()
    end)
    helper.run(function()
      local call = b:invite(a:uri(), { sdp = sip.sdp.offer{ addr = "127.0.0.1" }, timeout = 5 })
      if call then call:wait(5) end
    end)
    assert.matches("call:play: the call has no media", err)
  end)

  it("rejects bad media settings naming the option", function()
    helper.raises("unknown option 'port'", sip.ua, { media = { port = 4000 } })
    helper.raises("media.ports", sip.ua, { media = { ports = "4000" } })
    helper.raises("media.codecs%[1%]", sip.ua, { media = { codecs = { "SPEEX-X" } } })
  end)
end)

describe("examples/voicemail.lua", function()
  it("answers SIPp, plays its welcome, records the speech SIPp plays, and hangs up at BYE", function()
    local port = helper.free_port()
    local sounds = DIR .. "/sounds"
    os.execute("mkdir -p '" .. sounds .. "'")
    sh("sox -n -r 8000 -c 1 -b 16 '" .. sounds .. "/welcome.wav' synth 0.5 sine 800 vol 0.5")
    sh("sox -n -r 8000 -c 1 -b 16 '" .. sounds .. "/goodbye.wav' synth 0.3 sine 600 vol 0.5")
    local ivr = helper.spawn({ helper.root .. "/bin/luasip", helper.root .. "/examples/voicemail.lua",
                               "udp:127.0.0.1:" .. port, "-d", sounds, "-o", DIR, "-n", "1",
                               -- SIPp's BYE, not a pause in its speech, ends the message
                               "-s", "20" }, "ivr")
    helper.spin(0.5)
    local sipp = helper.sipp{ sf = "uac_pcap_audio.xml", port = helper.free_port(),
                              remote = "127.0.0.1:" .. port,
                              args = { "-m", 1, "-s", "ivr", "-mp", helper.free_port(),
                                       "-timeout", "30", "-timeout_error" } }
    assert.are.equal(0, sipp:wait(30), sipp.log())
    assert.are.equal(0, ivr:wait(10), ivr.log())
    local log = ivr.log()
    local secs, reason, file = log:match("recorded ([%d%.]+) s %((%a+)%) to (%S+)")
    assert.truthy(secs, log)
    assert.are.equal("hangup", reason)
    assert.is_true(tonumber(secs) > 4, log)
    local d, rms = sound(file)
    assert.is_true(d > 4, "duration " .. d)
    assert.is_true(rms > 0.01, "rms " .. rms)
    os.remove(file)
  end)
end)

describe("examples/ivr.lua (the menu)", function()
  it("answers the menu, the PIN, the time and a message ended by #, by DTMF", function()
    local port = helper.free_port()
    local sounds = DIR .. "/menu-sounds"
    os.execute("mkdir -p '" .. sounds .. "'")
    for i, name in ipairs{ "menu", "invalid", "time", "message", "pin", "pin-ok", "pin-bad",
                           "operator", "goodbye", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9" } do
      sh("sox -n -r 8000 -c 1 -b 16 '" .. sounds .. "/" .. name .. ".wav' synth 0.2 sine " ..
         (300 + 20 * i) .. " vol 0.3")
    end
    local ivr = helper.spawn({ helper.root .. "/bin/luasip", helper.root .. "/examples/ivr.lua",
                               "udp:127.0.0.1:" .. port, "-d", sounds, "-o", DIR, "-n", "1",
                               "-p", "4321" }, "ivr-menu")
    helper.spin(0.5)
    local caller = ua()
    helper.run(function()
      local call = assert(caller:invite("sip:ivr@127.0.0.1:" .. port, { timeout = 5 }))
      local function press(digits, pause)
        assert(call:send_dtmf(digits, { method = "info" }))
        sip.sleep(pause or 0.6)
      end
      press("7")             -- not a choice: "invalid", then the menu again
      press("3")
      press("1111")          -- a wrong PIN
      press("4321")          -- the right one
      press("1", 0.3)        -- the time; a digit stops it (barge-in)
      press("2", 1.2)        -- a message after the beep ...
      press("#")             -- ... ended by #
      call:hangup()
    end, 30)
    assert.are.equal(0, ivr:wait(10), ivr.log())
    local log = ivr.log()
    local order = {}
    for what in log:gmatch("ivr: call 1: ([^\n]+)") do order[#order + 1] = what end
    assert.are.same({ "menu 3", "pin wrong (1111)", "pin ok", "menu 1", "menu 2" },
                    { order[1], order[2], order[3], order[4], order[5] }, log)
    assert.matches("ivr: call 1: message %(#%) in ", log)
    assert.matches("ivr: call 1 ended %(", log)
  end)
end)
