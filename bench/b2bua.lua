-- bench/b2bua.lua: the luasip B2BUA of the bridging benchmark (bench/run.lua,
-- section 10).
--
--   ./bin/luasip bench/b2bua.lua PORT TARGET [options]
--
-- Puts every INVITE through to TARGET (host:port, SIPp's `-sn uas` in the
-- bench) with `sip.b2bua(call, "sip:b2bua@TARGET", { media = MODE })`, the
-- way a user's script would: the B leg placed, A answered when B answers,
-- the two bridged until one hangs up. Prints "READY" once listening, then
-- a "STAT ..." line a second (counts and ua:stats()); with media "relay",
-- a line "BRIDGED a=PORT b=PORT" for each call once bridged: the local RTP
-- ports of its A and B legs (where the harness sends the A side's RTP and
-- what it matches in its capture).
--
-- Commands, one a line, appended by the harness to the --ctl file (read
-- every 0.1 s); line k is answered by a line "DONE k ...":
--   stats     the RTP counts of every live bridge, summed per leg
--             (call.media:stats(): packets received, relayed, dropped)
--
-- Options:
--   --media relay|direct  (default direct: the offer passes, no RTP here;
--                         relay: the UA has media settings and RTP is
--                         anchored in C, each packet passed to the other leg)
--   --ports LOW-HIGH      media.ports for relay (default 10000-19999)
--   --ctl FILE            the command file
--   --parent PID          exit when process PID (the harness) is gone

local sip = require "sip"

local port, target = tonumber(arg[1]), arg[2]
if not port or not (target or ""):match("^[%w%.%-]+:%d+$") then
  io.stderr:write("usage: luasip bench/b2bua.lua PORT HOST:PORT [--media relay|direct] [--ports LOW-HIGH] " ..
                  "[--ctl FILE] [--parent PID]\n")
  os.exit(2)
end

local mode, ports, ctl, parent = "direct", "10000-19999", nil, nil
do
  local i = 3
  while i <= #arg do
    local a = arg[i]
    if a == "--media" and (arg[i + 1] == "relay" or arg[i + 1] == "direct") then
      mode = arg[i + 1]; i = i + 1
    elseif a == "--ports" and (arg[i + 1] or ""):match("^%d+%-%d+$") then
      ports = arg[i + 1]; i = i + 1
    elseif a == "--ctl" then
      ctl = arg[i + 1]; i = i + 1
    elseif a == "--parent" then
      parent = arg[i + 1]; i = i + 1
    else
      io.stderr:write("b2bua.lua: unknown option ", a, "\n")
      os.exit(2)
    end
    i = i + 1
  end
end

sip.log("error")

-- the library's default of 100,000 server transactions caps a UDP server
-- at about 1,500 calls a second (each keeps two 32 s: Timers L and J);
-- media only for relay: with "direct" no RTP session is opened anyway
local ua = assert(sip.ua{ listen = "udp:127.0.0.1:" .. port, max_server_transactions = 2000000,
                          media = mode == "relay" and { addr = "127.0.0.1", ports = ports, codecs = { "PCMU" } } or
                                  nil })
local uri = "sip:b2bua@" .. target

local function say(...)
  io.stdout:write(...)
  io.stdout:write("\n")
  io.stdout:flush()
end

local calls_in, bridged, ended_a, ended_b, failed = 0, 0, 0, 0, 0
local first_err
local live = {}            -- relay: the bridges up, for the stats command

-- relay: the bridge's ports, and the bridge kept for `stats` while it is up
local function on_bridge(br)
  if br.state ~= "bridged" then return end
  live[br] = true
  bridged = bridged + 1
  say("BRIDGED a=", tostring(br.a.media and br.a.media:local_port()), " b=",
      tostring(br.b.media and br.b.media:local_port()))
end

-- direct: one options table for every call (no callback: nothing but the
-- B2BUA itself in what the bench measures)
local DIRECT = { media = "direct" }

ua:on("INVITE", function(call)
  calls_in = calls_in + 1
  local mine
  local by, why
  if mode == "relay" then
    by, why = sip.b2bua(call, uri, { media = "relay", on_bridge = function(br)
      mine = br
      on_bridge(br)
    end })
  else
    by, why = sip.b2bua(call, uri, DIRECT)
    if by then bridged = bridged + 1 end
  end
  if mine then live[mine] = nil end
  if by == "a" then
    ended_a = ended_a + 1
  elseif by == "b" then
    ended_b = ended_b + 1
  else
    failed = failed + 1
    first_err = first_err or why
  end
end)

local KEYS = { "packets_received", "relayed", "relay_dropped", "send_errors", "unexpected_source", "invalid",
               "unknown_pt", "packets_sent" }

local function command(k, line)
  if line:match("^%s*stats%s*$") then
    local sum = { a = {}, b = {} }
    for _, leg in pairs(sum) do
      for _, key in ipairs(KEYS) do leg[key] = 0 end
    end
    local n = 0
    for br in pairs(live) do
      n = n + 1
      for _, leg in ipairs{ "a", "b" } do
        local m = br[leg].media
        local ok, st = pcall(function() return m and m:stats() end)
        if ok and st then
          for _, key in ipairs(KEYS) do sum[leg][key] = sum[leg][key] + (st[key] or 0) end
        end
      end
    end
    local parts = { "DONE " .. k, "bridges=" .. n }
    for _, leg in ipairs{ "a", "b" } do
      for _, key in ipairs(KEYS) do parts[#parts + 1] = leg .. "_" .. key .. "=" .. sum[leg][key] end
    end
    say(table.concat(parts, " "))
  else
    say("DONE " .. k .. " error=bad_command")
  end
end

say("READY")

-- the commands (every 0.1 s), the STAT line (every second), the parent check
sip.spawn(function()
  local done, tick = 0, 0
  while true do
    sip.sleep(0.1)
    tick = tick + 1
    if ctl then
      local f = io.open(ctl)
      if f then
        local k = 0
        for line in f:lines() do
          k = k + 1
          if k > done then
            done = k
            command(k, line)
          end
        end
        f:close()
      end
    end
    if tick % 10 == 0 then
      local s = ua:stats()
      say(string.format("STAT t=%.1f in=%d bridged=%d ended_a=%d ended_b=%d failed=%d txns=%d dialogs=%d calls=%d " ..
                        "rx=%d tx=%d retx=%d dropped=%d%s",
                        sip.now(), calls_in, bridged, ended_a, ended_b, failed, s.transactions, s.dialogs, s.calls,
                        s.received, s.sent, s.retransmissions, s.dropped,
                        first_err and (" err=" .. tostring(first_err):gsub("%s", "_")) or ""))
      if parent then
        local f = io.open("/proc/" .. parent .. "/stat")
        if not f then os.exit(3) end   -- the harness is gone: do not linger
        f:close()
      end
    end
  end
end)
