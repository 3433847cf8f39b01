-- bench/sub_uas.lua: the luasip notifier of the subscription benchmark
-- (bench/run.lua, section 9).
--
--   ./bin/luasip bench/sub_uas.lua PORT [options]
--
-- Accepts every SUBSCRIBE the way a presence server would
-- (`sub:accept{ body = "open", content_type = "text/plain" }`: 200 with the
-- Expires asked, then the first NOTIFY) and keeps the subscription, in a
-- list, until it ends (un-SUBSCRIBE, expiry). Prints "READY" once
-- listening, then a "STAT ..." line a second (counts, ua:stats(), the Lua
-- heap); nothing in it walks the subscriptions.
--
-- Commands, one a line, appended by the harness to the --ctl file (read
-- every 0.1 s); line k is answered by a line "DONE k ...":
--   gc                 a full collection, then DONE k heap_kb=... live=...
--   notify N RATE      N NOTIFYs (`sub:notify{ body = }`), round-robin over
--                      the live subscriptions, RATE a second, each in a
--                      coroutine of its own; then DONE k with the CPU
--                      (utime+stime ticks from /proc/self/stat, and
--                      os.clock()) when the last was sent, when every one
--                      had its answer and once their client transactions
--                      had ended (Timer K: the client transactions back to
--                      their count before the first)
--
-- Options:
--   --max-subs N       max_subscriptions (default 1,000,000)
--   --ctl FILE         the command file
--   --parent PID       exit when process PID (the harness) is gone

local sip = require "sip"

local port = tonumber(arg[1])
if not port then
  io.stderr:write("usage: luasip bench/sub_uas.lua PORT [--max-subs N] [--ctl FILE] [--parent PID]\n")
  os.exit(2)
end

local max_subs, ctl, parent = 1000000, nil, nil
do
  local i = 2
  while i <= #arg do
    local a = arg[i]
    if a == "--max-subs" then
      max_subs = tonumber(arg[i + 1]); i = i + 1
    elseif a == "--ctl" then
      ctl = arg[i + 1]; i = i + 1
    elseif a == "--parent" then
      parent = arg[i + 1]; i = i + 1
    else
      io.stderr:write("sub_uas.lua: unknown option ", a, "\n")
      os.exit(2)
    end
    i = i + 1
  end
end

sip.log("error")

local ua = assert(sip.ua{ listen = "udp:127.0.0.1:" .. port, max_server_transactions = 2000000,
                          max_subscriptions = max_subs })

-- the live subscriptions: an array (round-robin) and each one's index in it
local subs, where = {}, {}
local accepted, refused, ended = 0, 0, 0
local first_err

local function add(sub)
  local n = #subs + 1
  subs[n], where[sub] = sub, n
end

local function remove(sub)
  local i = where[sub]
  if not i then return end
  local n = #subs
  local last = subs[n]
  subs[i], where[last] = last, i
  subs[n], where[sub] = nil, nil
end

ua:on("SUBSCRIBE", function(sub)
  local ok, err = sub:accept{ body = "open", content_type = "text/plain" }
  if sub.state == "terminated" then
    refused = refused + 1
    first_err = first_err or err
    return
  end
  if not ok then first_err = first_err or err end
  accepted = accepted + 1
  add(sub)
  sub:wait()
  remove(sub)
  ended = ended + 1
end)

-- utime + stime in ticks (the harness divides by CLK_TCK)
local function ticks()
  local f = io.open("/proc/self/stat")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  local ut, st = s:match("%)%s+%S+" .. string.rep("%s+%S+", 10) .. "%s+(%d+)%s+(%d+)")
  return (tonumber(ut) or 0) + (tonumber(st) or 0)
end

local function say(...)
  io.stdout:write(...)
  io.stdout:write("\n")
  io.stdout:flush()
end

local busy = false   -- a notify command is running

local function notify_phase(k, total, rate)
  busy = true
  local sent, ok, failed, inflight = 0, 0, 0, 0
  local err1
  local function client_txns()
    local s = ua:stats()
    return s.transactions - s.server_transactions
  end
  local txns0 = client_txns()
  local c0, o0, t0 = ticks(), os.clock(), sip.now()
  local rr = 0
  local bodies = { "open", "closed" }
  local function one(sub, i)
    local r, why = sub:notify{ body = bodies[i % 2 + 1] }
    if r then ok = ok + 1 else failed = failed + 1; err1 = err1 or why end
    inflight = inflight - 1
  end
  -- the schedule: NOTIFY i is due at t0 + (i - 1) / rate; bounded by the
  -- count and by twice the time the schedule takes, plus 10 s
  local give_up = t0 + 2 * total / rate + 10
  while sent < total and #subs > 0 and sip.now() < give_up do
    local due = math.min(total, math.floor((sip.now() - t0) * rate) + 1)
    while sent < due and #subs > 0 do
      rr = rr % #subs + 1
      sent = sent + 1
      inflight = inflight + 1
      sip.spawn(one, subs[rr], sent)
    end
    sip.sleep(0.005)
  end
  local c1, o1, t1 = ticks(), os.clock(), sip.now()
  -- every answer (a NOTIFY that gets none ends after Timer F, 32 s)
  while inflight > 0 and sip.now() < t1 + 40 do sip.sleep(0.01) end
  local c2, o2, t2 = ticks(), os.clock(), sip.now()
  -- the client transactions end T4 (5 s) after their final response
  while client_txns() > txns0 and sip.now() < t2 + 15 do sip.sleep(0.1) end
  local c3, o3, t3 = ticks(), os.clock(), sip.now()
  busy = false
  say(string.format("DONE %d sent=%d ok=%d failed=%d inflight=%d live=%d send_s=%.3f answered_s=%.3f " ..
                    "drained_s=%.3f ticks_sent=%d ticks_answered=%d ticks_drained=%d clock_sent=%.4f " ..
                    "clock_answered=%.4f clock_drained=%.4f txns_left=%d%s",
                    k, sent, ok, failed, inflight, #subs, t1 - t0, t2 - t0, t3 - t0, c1 - c0, c2 - c0, c3 - c0,
                    o1 - o0, o2 - o0, o3 - o0, client_txns() - txns0,
                    err1 and (" err=" .. tostring(err1):gsub("%s", "_")) or ""))
end

local function command(k, line)
  local words = {}
  for w in line:gmatch("%S+") do words[#words + 1] = w end
  if words[1] == "gc" then
    collectgarbage("collect")
    collectgarbage("collect")
    local s = ua:stats()
    say(string.format("DONE %d heap_kb=%.1f live=%d txns=%d dialogs=%d", k, collectgarbage("count"), #subs,
                      s.transactions, s.dialogs))
  elseif words[1] == "notify" and tonumber(words[2]) and tonumber(words[3]) and not busy then
    sip.spawn(notify_phase, k, tonumber(words[2]), tonumber(words[3]))
  else
    say("DONE " .. k .. " error=bad_command")
  end
end

say("READY")

-- the STAT line, the commands, the parent check
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
      say(string.format("STAT t=%.1f live=%d accepted=%d refused=%d ended=%d txns=%d server_txns=%d dialogs=%d " ..
                        "rx=%d tx=%d retx=%d mem_kb=%d%s", sip.now(), #subs, accepted, refused, ended,
                        s.transactions, s.server_transactions, s.dialogs, s.received, s.sent, s.retransmissions,
                        math.floor(collectgarbage("count")),
                        first_err and (" err=" .. tostring(first_err):gsub("%s", "_")) or ""))
      if parent then
        local f = io.open("/proc/" .. parent .. "/stat")
        if not f then os.exit(3) end   -- the harness is gone: do not linger
        f:close()
      end
    end
  end
end)
