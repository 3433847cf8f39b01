-- bench/media_uas.lua: the luasip UAS of the media benchmark (bench/run.lua,
-- section 6).
--
--   ./bin/luasip bench/media_uas.lua PORT FILE.wav [options]
--
-- A UA with media (sip.ua{ media = { addr, ports, codecs } }) that answers
-- every INVITE (180, then 200 with its SDP answer) and plays FILE in a
-- loop (`call:play(FILE, { loop = true })`) until the caller hangs up.
-- Prints "READY" once listening, then a "STAT ..." line whenever the
-- counts changed, checked every second (none while the calls just play, so
-- that the script itself allocates next to nothing then).
--
-- Options:
--   --ports LOW-HIGH   media.ports (default 30000-39999)
--   --parent PID       exit when process PID (the harness) is gone

local sip = require "sip"
local core = require "sip.core"

local port, file = tonumber(arg[1]), arg[2]
if not port or not file then
  io.stderr:write("usage: luasip bench/media_uas.lua PORT FILE.wav [--ports LOW-HIGH] [--parent PID]\n")
  os.exit(2)
end

local ports, parent = "30000-39999", nil
do
  local i = 3
  while i <= #arg do
    local a = arg[i]
    if a == "--ports" then
      ports = arg[i + 1]; i = i + 1
    elseif a == "--parent" then
      parent = arg[i + 1]; i = i + 1
    else
      io.stderr:write("media_uas.lua: unknown option ", a, "\n")
      os.exit(2)
    end
    i = i + 1
  end
end

sip.log("error")

local ua = assert(sip.ua{ listen = "udp:127.0.0.1:" .. port, max_server_transactions = 2000000,
                          media = { addr = "127.0.0.1", ports = ports, codecs = { "PCMU", "PCMA" } } })

local calls_in, answered, playing, ended, failed = 0, 0, 0, 0, 0
local first_err

ua:on("INVITE", function(call)
  calls_in = calls_in + 1
  call:ring()
  if not call:answer() then
    failed = failed + 1
    return
  end
  answered = answered + 1
  playing = playing + 1
  local ok, why = call:play(file, { loop = true })
  playing = playing - 1
  if not ok and why ~= "hangup" then
    failed = failed + 1
    first_err = first_err or why
  end
  call:wait()
  ended = ended + 1
end)

io.stdout:write("READY\n")
io.stdout:flush()

-- the STAT line is built only when a count changed, and the harness
-- looked for every 5 s: while the calls just play, this loop allocates
-- nothing but the parent check's file handle
local seen, tick = {}, 0
local function changed(...)
  local n, diff = select("#", ...), false
  for i = 1, n do
    local v = select(i, ...)
    if seen[i] ~= v then seen[i] = v; diff = true end
  end
  return diff
end
sip.spawn(function()
  while true do
    sip.sleep(1)
    tick = tick + 1
    if changed(calls_in, answered, playing, ended, failed, core.media.count()) then
      io.stdout:write(string.format("STAT in=%d answered=%d playing=%d ended=%d failed=%d sessions=%d%s\n",
                                    calls_in, answered, playing, ended, failed, core.media.count(),
                                    first_err and (" err=" .. first_err:gsub("%s", "_")) or ""))
      io.stdout:flush()
    end
    if parent and tick % 5 == 0 then
      local f = io.open("/proc/" .. parent .. "/stat")
      if not f then os.exit(3) end   -- the harness is gone: do not linger
      f:close()
    end
  end
end)
