-- usage: luasip examples/voicemail.lua [listen] [-d sounds_dir] [-n calls] [-o out_dir] [-s secs]
--
-- A voicemail IVR: answers each call, plays a welcome prompt, records the
-- caller's message after a beep (up to 30 s, or 3 s of silence), plays
-- the message back, says goodbye and hangs up. Media is real RTP (PCMU or
-- PCMA) from the UA's `media` settings.
--
--   make sounds                                   (the prompts, with espeak-ng)
--   luasip examples/voicemail.lua udp:127.0.0.1:5060
--   baresip, linphone or `sipp -sn uac` can call sip:ivr@127.0.0.1:5060
--
--   -d dir     where welcome.wav and goodbye.wav are (default examples/sounds)
--   -n calls   stop after that many calls (default: serve until Ctrl-C)
--   -o dir     where recordings go (default /tmp), one msg-<call-id>.wav each
--   -s secs    the silence that ends a message (default 3)

local sip = require "sip"

local USAGE = "usage: luasip examples/voicemail.lua [listen] [-d sounds_dir] [-n calls] [-o out_dir] [-s secs]"

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local listen, sounds, max_calls, out, silence = "udp:127.0.0.1:5060", here .. "/sounds", nil, "/tmp", 3
do
  local argv, i = arg or {}, 1
  while i <= #argv do
    local a = argv[i]
    if a == "-d" or a == "-o" or a == "-n" or a == "-s" then
      i = i + 1
      local v = argv[i] or ""
      if a == "-d" then sounds = v
      elseif a == "-o" then out = v
      elseif a == "-s" then silence = tonumber(v) or silence
      else max_calls = tonumber(v) end
    elseif a:match("^%a+:.+:%d+$") then
      listen = a
    else
      io.stderr:write(USAGE, "\n")
      os.exit(2)
    end
    i = i + 1
  end
end

local host = listen:match("^%a+:%[?([^%]]+)%]?:%d+$")
local ua = assert(sip.ua{ listen = listen,
  media = { addr = (host == "0.0.0.0") and "127.0.0.1" or host, ports = "16384-32767",
            codecs = { "PCMU", "PCMA", "telephone-event" } } })
print("ivr: listening on " .. ua:uri("ivr"))

-- one caller: welcome, a message after the beep, played back, goodbye
local function voicemail(call, n)
  call:ring()
  if not call:answer() then return end
  local ok, why = call:play(sounds .. "/welcome.wav")
  if not ok then return print("ivr: call " .. n .. ": welcome: " .. why) end
  local file = out .. "/msg-" .. call.call_id:gsub("[^%w%-%.]", "_") .. ".wav"
  local rec, err = call:record(file, { max = 30, silence = silence, beep = true })
  if not rec then return print("ivr: call " .. n .. ": record: " .. err) end
  print(string.format("ivr: call %d: recorded %.1f s (%s) to %s", n, rec.duration, rec.reason, file))
  if rec.reason == "hangup" then return end
  if rec.duration > 0 then call:play(file) end
  call:play(sounds .. "/goodbye.wav")
  call:hangup()
end

local served = 0
ua:on("INVITE", function(call)
  served = served + 1
  local n = served
  voicemail(call, n)
  print("ivr: call " .. n .. " ended (" .. tostring(call:wait()) .. ")")
  if max_calls and n >= max_calls then ua:close() end
end)
