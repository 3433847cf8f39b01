--- baresip (a real softphone, Debian's package) calls examples/voicemail.lua:
-- its aufile source speaks (a 700 Hz tone stands for the caller's voice)
-- and its sndfile module writes what it heard. The caller must hear the
-- IVR's welcome prompt, and the IVR must record the caller.
local helper = require "helper"

local sh, stat = helper.sh, helper.sound

-- baresip's configuration in cfg: a phone on phone_port whose voice is
-- the WAV `voice`, dumping what it hears into `dump` (sndfile)
local function write_config(cfg, phone_port, voice, dump)
  local f = assert(io.open(cfg .. "/config", "w"))
  f:write(table.concat({
    "poll_method epoll",
    "sip_listen 127.0.0.1:" .. phone_port,
    "sip_transports udp",
    "audio_player aubridge,nowhere",
    "audio_source aufile," .. voice,
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
end

-- until the example says it listens (slow under valgrind)
local function listening(proc)
  local deadline = require("sip.core").now() + 30
  while not proc.log():find("listening on", 1, true) and require("sip.core").now() < deadline do
    helper.spin(0.1)
  end
end

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
    write_config(cfg, phone_port, dir .. "/voice.wav", dump)

    local ivr = helper.spawn({ helper.root .. "/bin/luasip", helper.root .. "/examples/voicemail.lua",
                               "udp:127.0.0.1:" .. ivr_port, "-d", snd, "-o", dir, "-n", "1" }, "ivr")
    listening(ivr)
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

describe("baresip calling examples/ivr.lua", function()
  after_each(helper.stop_all)

  it("presses 3, then the PIN, by RFC 4733: the menu takes it", function()
    local dir = helper.tmp .. "/baresip-menu-" .. math.random(1, 1e9)
    local cfg, dump, snd = dir .. "/cfg", dir .. "/dump", dir .. "/sounds"
    assert(os.execute("mkdir -p '" .. cfg .. "' '" .. dump .. "' '" .. snd .. "'"))
    finally(function() os.execute("rm -rf '" .. dir .. "'") end)
    for _, name in ipairs{ "menu", "invalid", "time", "message", "pin", "pin-ok", "pin-bad",
                           "operator", "goodbye", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9" } do
      sh("sox -n -r 8000 -c 1 -b 16 '" .. snd .. "/" .. name .. ".wav' synth 0.3 sine 500 vol 0.3")
    end
    -- a quiet voice long enough for the whole call
    sh("sox -n -r 8000 -c 1 -b 16 '" .. dir .. "/voice.wav' synth 40 sine 700 vol 0.01")
    local ivr_port, phone_port = helper.free_port(), helper.free_port()
    write_config(cfg, phone_port, dir .. "/voice.wav", dump)
    local ivr = helper.spawn({ helper.root .. "/bin/luasip", helper.root .. "/examples/ivr.lua",
                               "udp:127.0.0.1:" .. ivr_port, "-d", snd, "-o", dir, "-n", "1",
                               "-p", "4321" }, "ivr-menu")
    listening(ivr)
    -- keys typed on baresip's console once the call is up: 3, then 4321
    local keys = "sleep 5; printf 3; sleep 2; for k in 4 3 2 1; do printf $k; sleep 0.4; done; sleep 3"
    local phone = helper.spawn({ "sh", "-c", "(" .. keys .. ") | baresip -f " .. helper.shell_quote(cfg) ..
                                 " -t 25 -e " .. helper.shell_quote("/dial sip:ivr@127.0.0.1:" .. ivr_port) },
                               "baresip-menu")
    phone:wait(40)
    assert.are.equal(0, ivr:wait(20), ivr.log() .. "\n" .. phone.log())
    local log = ivr.log()
    assert.matches("ivr: call 1: menu 3\n", log)
    assert.matches("ivr: call 1: pin ok\n", log, nil, true)
    assert.matches("send DTMF digit: '4'", phone.log(), nil, true)
  end)
end)
