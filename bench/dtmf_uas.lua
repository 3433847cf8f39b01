-- bench/dtmf_uas.lua: the luasip UAS of the DTMF benchmark (bench/run.lua,
-- section 7).
--
--   ./bin/luasip bench/dtmf_uas.lua PORT PROMPT.wav [options]
--
-- A UA with media that answers every INVITE, then collects digits one at a
-- time the way an IVR menu does: `call:collect{ prompt = PROMPT, max = 1 }`
-- plays the prompt with barge-in and returns the first digit (RFC 4733
-- events from SIPp's pcaps; with --inband the spandsp detector also runs
-- on the caller's audio, `call.media:dtmf_config{ inband = true }`). Each
-- digit, as soon as collect returned it, is logged as
--
--   D <local RTP port> <digit> <core.now()>
--
-- core.now() is libev's wall clock (ev_now_update: CLOCK_MONOTONIC plus an
-- offset to CLOCK_REALTIME resynchronised every half second), comparable
-- with the kernel's capture timestamps (CLOCK_REALTIME) of the events' first
-- packets. The lines are buffered and written once a second, so the
-- measured path has no write() in it. Prints "READY" once listening and a
-- STAT line when its counts change (rx and unexpected: the RTP packets the
-- calls' sessions received, and those from a source they did not take,
-- as of each call's last digit).
--
-- Options:
--   --inband           force the inband detector on every call
--   --ports LOW-HIGH   media.ports (default 30000-39999)
--   --parent PID       exit when process PID (the harness) is gone

local sip = require "sip"
local core = require "sip.core"

local port, prompt = tonumber(arg[1]), arg[2]
if not port or not prompt then
  io.stderr:write("usage: luasip bench/dtmf_uas.lua PORT PROMPT.wav [--inband] [--ports LOW-HIGH] [--parent PID]\n")
  os.exit(2)
end

local ports, parent, inband = "30000-39999", nil, false
do
  local i = 3
  while i <= #arg do
    local a = arg[i]
    if a == "--ports" then
      ports = arg[i + 1]; i = i + 1
    elseif a == "--parent" then
      parent = arg[i + 1]; i = i + 1
    elseif a == "--inband" then
      inband = true
    else
      io.stderr:write("dtmf_uas.lua: unknown option ", a, "\n")
      os.exit(2)
    end
    i = i + 1
  end
end

sip.log("error")

local ua = assert(sip.ua{ listen = "udp:127.0.0.1:" .. port, max_server_transactions = 2000000,
                          media = { addr = "127.0.0.1", ports = ports,
                                    codecs = { "PCMU", "PCMA", "telephone-event" } } })

local calls_in, answered, ended, digits, inband_on, failed = 0, 0, 0, 0, 0, 0
local rx_packets, rx_unexpected = 0, 0   -- the media sessions' counts, as of each call's last digit
local first_err
local lines, nlines = {}, 0

ua:on("INVITE", function(call)
  calls_in = calls_in + 1
  call:ring()
  if not call:answer() then
    failed = failed + 1
    return
  end
  answered = answered + 1
  local m = call.media
  local lport = tostring(m:stats()["local"]):match("(%d+)$") or "?"
  if inband then
    local _, on = m:dtmf_config{ inband = true }
    if on then inband_on = inband_on + 1 end
  end
  local st
  while true do
    local d, why = call:collect{ prompt = prompt, max = 1, terminators = "", timeout = 60 }
    if not d then
      if why ~= "hangup" then
        failed = failed + 1
        first_err = first_err or why
      end
      break
    end
    local t = core.now()
    digits = digits + 1
    nlines = nlines + 1
    lines[nlines] = string.format("D %s %s %.6f", lport, d, t)
    st = m:stats() or st
  end
  if st then
    rx_packets = rx_packets + (st.packets_received or 0)
    rx_unexpected = rx_unexpected + (st.unexpected_source or 0)
  end
  ended = ended + 1
end)

io.stdout:write("READY\n")
io.stdout:flush()

local last, tick = "", 0
sip.spawn(function()
  while true do
    sip.sleep(1)
    tick = tick + 1
    if nlines > 0 then
      io.stdout:write(table.concat(lines, "\n", 1, nlines), "\n")
      lines, nlines = {}, 0
    end
    local s = string.format("STAT in=%d answered=%d ended=%d digits=%d inband=%d failed=%d rx=%d unexpected=%d%s",
                            calls_in, answered, ended, digits, inband_on, failed, rx_packets, rx_unexpected,
                            first_err and (" err=" .. first_err:gsub("%s", "_")) or "")
    if s ~= last then
      io.stdout:write(s, "\n")
      last = s
    end
    io.stdout:flush()
    if parent and tick % 5 == 0 then
      local f = io.open("/proc/" .. parent .. "/stat")
      if not f then os.exit(3) end   -- the harness is gone: do not linger
      f:close()
    end
  end
end)
