-- usage: luasip examples/ivr.lua [listen] [-d sounds_dir] [-p pin] [-n calls] [-o out_dir]
--
-- A menu IVR, the shape most IVRs have: a menu read to the caller, a
-- digit chooses, wrong or missing digits get a prompt and another try,
-- and any digit typed during a prompt stops it (barge-in) and counts.
--
--   1  the time, read out digit by digit
--   2  leave a message: recorded after the beep until # (or silence)
--   3  enter a 4-digit PIN, then # (three tries)
--   0  an operator (a transfer placeholder: says so and goes back)
--
-- Digits come by RFC 4733, SIP INFO or inband tones: call:collect takes
-- them all. Media is real RTP from the UA's `media` settings.
--
--   make sounds                                   (the prompts, with espeak-ng)
--   luasip examples/ivr.lua udp:127.0.0.1:5060 -p 1234
--   then call sip:ivr@127.0.0.1:5060 from baresip or linphone
--
--   -d dir     the prompts (default examples/sounds): menu, invalid, time,
--              0..9, message, pin, pin-ok, pin-bad, operator, goodbye (.wav)
--   -p pin     the PIN that option 3 accepts (default 1234)
--   -n calls   stop after that many calls (default: serve until Ctrl-C)
--   -o dir     where messages go (default /tmp)

local sip = require "sip"

local USAGE = "usage: luasip examples/ivr.lua [listen] [-d sounds_dir] [-p pin] [-n calls] [-o out_dir]"

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local listen, sounds, pin_ok, max_calls, out = "udp:127.0.0.1:5060", here .. "/sounds", "1234", nil, "/tmp"
do
  local argv, i = arg or {}, 1
  while i <= #argv do
    local a = argv[i]
    local v = argv[i + 1]
    if a == "-d" and v then sounds, i = v, i + 1
    elseif a == "-p" and v then pin_ok, i = v, i + 1
    elseif a == "-n" and tonumber(v) then max_calls, i = tonumber(v), i + 1
    elseif a == "-o" and v then out, i = v, i + 1
    elseif a:match("^%a+:.+:%d+$") then listen = a
    else
      io.stderr:write(USAGE, "\n")
      os.exit(2)
    end
    i = i + 1
  end
end

local function S(name) return sounds .. "/" .. name .. ".wav" end

local host = listen:match("^%a+:%[?([^%]]+)%]?:%d+$")
local ua = assert(sip.ua{ listen = listen,
  media = { addr = (host == "0.0.0.0") and "127.0.0.1" or host, ports = "16384-32767" } })
print("ivr: listening on " .. ua:uri("ivr"))

-- 1: the time as digits, "14 30" read "1 4 3 0"
local function say_time(call)
  local files = { S("time") }
  for d in os.date("%H%M"):gmatch("%d") do files[#files + 1] = S(d) end
  return call:play(files, { barge = true })
end

-- 2: a message after the beep, until # (or 3 s of silence, or 60 s):
-- the recording and the wait for # run side by side, the first to end wins
local function leave_message(call, n)
  call:play(S("message"), { barge = true })
  call:flush_dtmf()
  local file = string.format("%s/ivr-msg-%d-%d.wav", out, os.time(), n)
  local i, rec = sip.first(
    function() return call:record(file, { max = 60, silence = 3, beep = true }) end,
    function() return call:collect{ max = 1, terminators = "", timeout = 61 } end)
  if i == 2 then rec = { reason = "#" } end
  print(string.format("ivr: call %d: message (%s) in %s", n, rec and rec.reason or "?", file))
end

-- 3: a PIN, three tries
local function check_pin(call, n)
  for _ = 1, 3 do
    local pin, err = call:collect{ min = 4, max = 4, prompt = S("pin"), timeout = 8, interdigit = 4 }
    if err == "hangup" then return end
    if pin == pin_ok then
      print("ivr: call " .. n .. ": pin ok")
      return call:play(S("pin-ok"))
    end
    print("ivr: call " .. n .. ": pin wrong (" .. tostring(pin or err) .. ")")
    call:play(S("pin-bad"))
  end
end

local served = 0
ua:on("INVITE", function(call)
  served = served + 1
  local n = served
  call:ring()
  if call:answer() then
    for _ = 1, 5 do            -- the menu, at most five rounds
      local choice, err = call:collect{ max = 1, terminators = "", prompt = S("menu"),
        invalid = S("invalid"), timeout = 6, retries = 3, pattern = "^[0-3]$" }
      if not choice then
        print("ivr: call " .. n .. ": menu: " .. err)
        break
      end
      print("ivr: call " .. n .. ": menu " .. choice)
      if choice == "1" then say_time(call)
      elseif choice == "2" then leave_message(call, n)
      elseif choice == "3" then check_pin(call, n)
      else call:play(S("operator")) end
    end
    if call.state ~= "ended" then
      call:play(S("goodbye"))
      call:hangup()
    end
  end
  print("ivr: call " .. n .. " ended (" .. tostring(call:wait()) .. ")")
  if max_calls and n >= max_calls then ua:close() end
end)
