--- baresip (a real softphone, Debian's package) calls examples/voicemail.lua:
-- its aufile source speaks (a 700 Hz tone stands for the caller's voice)
-- and its sndfile module writes what it heard. The caller must hear the
-- IVR's welcome prompt, and the IVR must record the caller.
local helper = require "helper"

local sh, stat = helper.sh, helper.sound

describe("baresip calling examples/voicemail.lua", function()
  after_each(helper.stop_all)

  it("hears the welcome prompt, and its voice is recorded", function()
    local dir = helper.tmp .. "/baresip-" .. math.random(1, 1e9)
    local cfg, dump, snd = dir .. "/cfg", dir .. "/dump", dir .. "/sounds"
    assert(os.execute("mkdir -p '" .. cfg .. "' '" .. dump .. "' '" .. snd .. "'"))
    finally(function() os.execute("rm -rf '" .. dir .. "'") end)
    -- the prompts: a 1 kHz welcome the caller must hear, a short goodbye
    sh("sox -n -r 8000 -c 1 -b 16 '" .. snd .. "/welcome.wav' synth 1 sine 1000 vol 0.5")
    sh("sox -n -r 8000 -c 1 -b 16 '" .. snd .. "/goodbye.wav' synth 0.3 sine 600 vol 0.5")
    -- the caller's voice: baresip hangs up when it has all been sent
    sh("sox -n -r 8000 -c 1 -b 16 '" .. dir .. "/voice.wav' synth 6 sine 700 vol 0.5")
    local ivr_port, phone_port = helper.free_port(), helper.free_port()
    local f = assert(io.open(cfg .. "/config", "w"))
    f:write(table.concat({
      "poll_method epoll",
      "sip_listen 127.0.0.1:" .. phone_port,
      "sip_transports udp",
      "audio_player aubridge,nowhere",
      "audio_source aufile," .. dir .. "/voice.wav",
      "audio_alert aubridge,nowhere",
      "module_path /usr/lib/baresip/modules",
      "module stdio.so", "module g711.so", "module aufile.so", "module aubridge.so",
      "module sndfile.so", "module_app account.so", "module_app menu.so",
      "snd_path " .. dump,
      "rtp_ports 51000-51999",
    }, "\n") .. "\n")
    f:close()
    f = assert(io.open(cfg .. "/accounts", "w"))
    f:write("<sip:phone@127.0.0.1>;regint=0;audio_codecs=PCMU\n")
    f:close()
    assert(io.open(cfg .. "/contacts", "w")):close()

    local ivr = helper.spawn({ helper.root .. "/bin/luasip", helper.root .. "/examples/voicemail.lua",
                               "udp:127.0.0.1:" .. ivr_port, "-d", snd, "-o", dir, "-n", "1" }, "ivr")
    helper.spin(0.5)
    local phone = helper.spawn({ "baresip", "-f", cfg, "-t", "20",
                                 "-e", "/dial sip:ivr@127.0.0.1:" .. ivr_port }, "baresip")
    assert.are.equal(0, ivr:wait(30), ivr.log())
    phone:wait(25)
    -- what the phone heard: the 1 kHz prompt
    local heard = sh("ls " .. dump .. "/*-dec.wav"):match("%S+")
    assert.truthy(heard, phone.log())
    local len, rms, freq = stat(heard)
    assert.is_true(len >= 0.9, "heard " .. tostring(len) .. " s\n" .. phone.log())
    assert.is_true(rms > 0.05, "heard rms " .. tostring(rms))
    assert.is_true(math.abs(freq - 1000) < 80, "heard " .. tostring(freq) .. " Hz")
    -- what the IVR recorded: the phone's 700 Hz voice, until it hung up
    local log = ivr.log()
    local file = log:match("recorded [%d%.]+ s %(hangup%) to (%S+)")
    assert.truthy(file, log)
    len, rms, freq = stat(file)
    assert.is_true(len > 3, "recorded " .. tostring(len) .. " s")
    assert.is_true(rms > 0.05, "recorded rms " .. tostring(rms))
    assert.is_true(math.abs(freq - 700) < 60, "recorded " .. tostring(freq) .. " Hz")
  end)
end)
