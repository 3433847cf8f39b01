-- bench/uac.lua: the Lua UAC the benchmark drives (run by bench/run.lua).
--
--   ./bin/luasip bench/uac.lua URI RATE CALLS [WORKERS] [PORT]
--
-- WORKERS coroutines (0 or absent: RATE/20, at least 8) share one schedule:
-- call i is due at start + i/RATE. A worker takes the next due call,
-- sleeps until its time (or goes at once when late), places it with
-- ua:invite and hangs up as soon as it is answered (BYE, waits for the
-- 200). When every call is done it prints one line:
--
--   RESULT ok=N failed=N elapsed=S rate=CPS cpu=S late_max=S first_err=...
--
-- cpu is os.clock() (this process's CPU time) from the first call to the
-- last; elapsed is wall time over the same span; late_max the largest
-- delay between a call's due time and its start (the UAC falling behind).

local sip = require "sip"

local uri, rate, total = arg[1], tonumber(arg[2]), tonumber(arg[3])
local workers = tonumber(arg[4] or "") or 0
if workers < 1 then workers = math.max(8, math.floor((rate or 0) / 20)) end
local port = tonumber(arg[5] or "") or 0
if not uri or not rate or not total then
  io.stderr:write("usage: luasip bench/uac.lua URI RATE CALLS [WORKERS] [PORT]\n")
  os.exit(2)
end

sip.log("error")
local ua = assert(sip.ua{ listen = "udp:127.0.0.1:" .. port })

local next_i, ok_n, failed_n, done_n = 0, 0, 0, 0
local first_err
local late_max = 0
local t0, c0 = sip.now() + 0.05, os.clock()
local running = workers

local function worker()
  while true do
    local i = next_i
    if i >= total then break end
    next_i = i + 1
    local due = t0 + i / rate
    local now = sip.now()
    if due > now then
      sip.sleep(due - now)
    elseif now - due > late_max then
      late_max = now - due
    end
    local call, err = ua:invite(uri, { timeout = 32 })
    if call then
      local hung, herr = call:hangup()
      if hung then
        ok_n = ok_n + 1
      else
        failed_n = failed_n + 1
        first_err = first_err or ("BYE: " .. tostring(herr))
      end
    else
      failed_n = failed_n + 1
      first_err = first_err or ("INVITE: " .. tostring(err))
    end
    done_n = done_n + 1
  end
  running = running - 1
  if running == 0 then
    local elapsed = sip.now() - t0
    local cpu = os.clock() - c0
    io.stdout:write(string.format(
      "RESULT ok=%d failed=%d elapsed=%.3f rate=%.1f cpu=%.4f late_max=%.3f first_err=%s\n",
      ok_n, failed_n, elapsed, done_n / elapsed, cpu, late_max,
      (first_err or "none"):gsub("%s", "_")))
    io.stdout:flush()
    ua:close()
    sip.stop()
  end
end

for _ = 1, workers do sip.spawn(worker) end
