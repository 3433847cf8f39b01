--- sip.load: a call flow as a load test.
--
--     local summary = sip.load{
--       rate = 200, limit = 10000, concurrency = 5000,
--       run = function(i, rtd)
--         local call, err = ua:invite(uri)
--         if not call then return nil, err end      -- a failure, counted by err
--         rtd()                                      -- response time: now
--         return call:hangup()                       -- truthy: a success
--       end,
--       ua = ua, screen = true, stats = "run.csv", rtt = "rtt.csv" }
--
-- Calls start at `rate` per second (reached linearly over `ramp` seconds)
-- from one pacing coroutine, at most `concurrency` at a time (late calls
-- start as soon as a slot frees, as SIPp's do), until `limit` calls have
-- started or `duration` seconds have passed; then sip.load waits for the
-- calls still running (each has `timeout` seconds, after which it counts
-- as failed with "timeout" and is left to finish on its own) and returns
-- a summary. A call succeeds when run returns a truthy value; it fails
-- when it returns a falsy one (its second value, or "returned false", is
-- the reason) or raises (the error message is the reason).
--
-- A response time is what `rtd()` measures (the time since the call
-- started, when the flow calls it), else the call's whole length.
--
-- `stats` writes SIPp's -trace_stat file (the same columns, ";" after
-- each, a row every `stats_every` seconds and one at the end), so tools
-- that read SIPp's statistics read it. `rtt` writes a histogram of the
-- response times (written again at each row and at the end).
-- @module sip.load

local core = require "sip.core"
local check = require "sip.check"

local sip_mod
local function sip()
  sip_mod = sip_mod or require "sip"
  return sip_mod
end

local floor, max, min, sqrt, fmt = math.floor, math.max, math.min, math.sqrt, string.format

-- SIPp's -trace_stat columns, in its order (SIPp 3.6)
local FAIL_COLUMNS = {
  "FailedCannotSendMessage", "FailedMaxUDPRetrans", "FailedTcpConnect", "FailedTcpClosed",
  "FailedUnexpectedMessage", "FailedCallRejected", "FailedCmdNotSent", "FailedRegexpDoesntMatch",
  "FailedRegexpShouldntMatch", "FailedRegexpHdrNotFound", "FailedOutboundCongestion",
  "FailedTimeoutOnRecv", "FailedTimeoutOnSend", "FailedTestDoesntMatch", "FailedTestShouldntMatch",
  "FailedStrcmpDoesntMatch", "FailedStrcmpShouldntMatch",
}
local RT_BUCKETS = { 10, 20, 30, 40, 50, 100, 150, 200 }            -- ms, SIPp's defaults
local CL_BUCKETS = { 10, 50, 100, 500, 1000, 5000, 10000 }

local function header_line()
  local h = { "StartTime", "LastResetTime", "CurrentTime", "ElapsedTime(P)", "ElapsedTime(C)",
              "TargetRate", "CallRate(P)", "CallRate(C)", "IncomingCall(P)", "IncomingCall(C)",
              "OutgoingCall(P)", "OutgoingCall(C)", "TotalCallCreated", "CurrentCall",
              "SuccessfulCall(P)", "SuccessfulCall(C)", "FailedCall(P)", "FailedCall(C)" }
  local function pc(name) h[#h + 1] = name .. "(P)"; h[#h + 1] = name .. "(C)" end
  for _, n in ipairs(FAIL_COLUMNS) do pc(n) end
  for _, n in ipairs{ "OutOfCallMsgs", "DeadCallMsgs", "Retransmissions", "AutoAnswered", "Warnings",
                      "FatalErrors", "WatchdogMajor", "WatchdogMinor", "ResponseTime1",
                      "ResponseTime1StDev", "CallLength", "CallLengthStDev" } do
    pc(n)
  end
  h[#h + 1] = "ResponseTimeRepartition1"
  for _, b in ipairs(RT_BUCKETS) do h[#h + 1] = "ResponseTimeRepartition1_<" .. b end
  h[#h + 1] = "ResponseTimeRepartition1_>=" .. RT_BUCKETS[#RT_BUCKETS]
  h[#h + 1] = "CallLengthRepartition"
  for _, b in ipairs(CL_BUCKETS) do h[#h + 1] = "CallLengthRepartition_<" .. b end
  h[#h + 1] = "CallLengthRepartition_>=" .. CL_BUCKETS[#CL_BUCKETS]
  return table.concat(h, ";") .. ";"
end

-- the SIPp column a failure reason counts in
local function fail_column(why)
  if why == "timeout" then return "FailedTimeoutOnRecv" end
  if why:match("^%d%d%d ") then return "FailedUnexpectedMessage" end
  if why:match("^transport") or why:match("^tls") then return "FailedCannotSendMessage" end
  return nil
end

-- SIPp's time formats
local function date3(t)
  return os.date("%Y-%m-%d\t%H:%M:%S", floor(t)) .. fmt(".%06d\t%d.%06d", floor(t % 1 * 1e6),
         floor(t), floor(t % 1 * 1e6))
end
local function hms(s)
  s = floor(s)
  return fmt("%02d:%02d:%02d", s // 3600, s % 3600 // 60, s % 60)
end
local function hmsu(s)
  local us = floor(s * 1e6 + 0.5)
  local whole = us // 1000000
  return fmt("%02d:%02d:%02d:%06d", whole // 3600, whole % 3600 // 60, whole % 60, us % 1000000)
end
local function num(x)
  if math.type(x) == "integer" or x == floor(x) then return fmt("%d", floor(x)) end
  return (fmt("%.3f", x):gsub("0+$", ""):gsub("%.$", ""))
end

-- running mean and deviation of a series of seconds
local function series()
  return { n = 0, sum = 0, sq = 0 }
end
local function add(s, v)
  s.n = s.n + 1
  s.sum = s.sum + v
  s.sq = s.sq + v * v
end
local function mean(s) return s.n > 0 and s.sum / s.n or 0 end
local function stdev(s)
  if s.n < 2 then return 0 end
  local m = s.sum / s.n
  return sqrt(max(0, s.sq / s.n - m * m))
end

-- the histogram of the rtt file and the summary's percentiles: upper
-- bounds in milliseconds, the last open
local HIST = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100, 150, 200,
               300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 30000, 60000 }

local function hist_index(ms)
  -- a binary search over HIST
  local lo, hi = 1, #HIST + 1
  while lo < hi do
    local mid = (lo + hi) // 2
    if ms < HIST[mid] then hi = mid else lo = mid + 1 end
  end
  return lo
end

local function bucket_counts(bounds, counts, ms)
  for i, b in ipairs(bounds) do
    if ms < b then counts[i] = counts[i] + 1; return end
  end
  counts[#bounds + 1] = counts[#bounds + 1] + 1
end

local function zeros(n)
  local t = {}
  for i = 1, n do t[i] = 0 end
  return t
end

-- the value below which fraction q of the samples fall, interpolated in its bucket
local function percentile(hist, total, q, lo_ms, hi_ms)
  if total == 0 then return nil end
  local want, seen = q * total, 0
  for i = 1, #HIST + 1 do
    local c = hist[i]
    if c > 0 and seen + c >= want then
      local a = i == 1 and 0 or HIST[i - 1]
      local b = HIST[i] or hi_ms
      a, b = max(a, lo_ms), min(b, hi_ms)
      return (a + (b - a) * (want - seen) / c) / 1000
    end
    seen = seen + c
  end
  return hi_ms / 1000
end

local function is_tty()
  local ok = os.execute("test -t 1")
  return ok == true or ok == 0
end

local load_options = {
  rate = "number", limit = "integer", concurrency = "integer", duration = "number", ramp = "number",
  run = "function", screen = "boolean", stats = "string", stats_every = "number", rtt = "string",
  ua = "userdata|table", timeout = "number", output = "userdata",
}

--- Run a call flow as a load test; blocks (yields) until the run ends.
-- @tab opts `run` (required: `function(i, rtd)`, i from 1), `rate` (calls
-- per second, default 10), `limit` (calls to start), `duration` (seconds
-- during which calls start; `limit` or `duration` is required),
-- `concurrency` (calls running at once, default 1000), `ramp` (seconds to
-- reach `rate`), `timeout` (seconds a call may take, default 60), `ua`
-- (a sip.UA or a list: their retransmissions are counted), `screen` (true:
-- a screen refreshed each second on a terminal, a progress line each
-- second otherwise), `stats` (SIPp -trace_stat CSV file), `stats_every`
-- (its period in seconds, default 1), `rtt` (response-time histogram
-- CSV), `output` (the file the screen or progress lines go to, default
-- io.stdout; the screen needs a terminal)
-- @treturn table the summary: `created`, `successful`, `failed`,
-- `timed_out`, `elapsed`, `rate` (calls started per second), `target_rate`,
-- `retransmissions`, `errors` (reason -> count), `response` and
-- `call_length` (`n`, `min`, `mean`, `max`, `stdev`, `p50`, `p90`,
-- `p99`, in seconds), `stopped` ("limit" or "duration")
local function load(opts)
  opts = check.opts(opts, "sip.load", 1, load_options)
  local fname = "sip.load"
  if not opts.run then check.arg(1, fname, "option 'run' (a function) is required") end
  if not opts.limit and not opts.duration then
    check.arg(1, fname, "give option 'limit' or 'duration': a load run is bounded")
  end
  local rate = opts.rate or 10
  if rate <= 0 then check.arg(1, fname, "option 'rate' must be positive") end
  if opts.limit and opts.limit < 0 then check.arg(1, fname, "option 'limit' must not be negative") end
  if opts.duration and opts.duration <= 0 then check.arg(1, fname, "option 'duration' must be positive") end
  local concurrency = opts.concurrency or 1000
  if concurrency < 1 then check.arg(1, fname, "option 'concurrency' must be at least 1") end
  local ramp = opts.ramp or 0
  if ramp < 0 then check.arg(1, fname, "option 'ramp' must not be negative") end
  local call_timeout = opts.timeout or 60
  if call_timeout <= 0 then check.arg(1, fname, "option 'timeout' must be positive") end
  local every = opts.stats_every or 1
  if every <= 0 then check.arg(1, fname, "option 'stats_every' must be positive") end
  local uas = {}
  if opts.ua then
    if getmetatable(opts.ua) == core.UA then
      uas[1] = opts.ua
    else
      for k, u in ipairs(opts.ua) do
        if getmetatable(u) ~= core.UA then check.arg(1, fname, "ua[" .. k .. "] is not a sip.UA") end
        uas[k] = u
      end
    end
  end
  local s = sip()
  s._current("sip.load")
  local run = opts.run
  local out = opts.output or io.stdout

  local stats_f, rtt_path
  if opts.stats then
    local err
    stats_f, err = io.open(opts.stats, "w")
    if not stats_f then check.arg(1, fname, "option 'stats': " .. err) end
  end
  if opts.rtt then
    rtt_path = opts.rtt
    local f, err = io.open(rtt_path, "w")
    if not f then
      if stats_f then stats_f:close() end
      check.arg(1, fname, "option 'rtt': " .. err)
    end
    f:close()
  end

  local function retrans()
    local n = 0
    for _, u in ipairs(uas) do
      local ok, st = pcall(u.stats, u)
      if ok then n = n + st.retransmissions end
    end
    return n
  end

  -- counters: C cumulative, P since the last row
  local C = { created = 0, ok = 0, failed = 0, timed_out = 0, fails = {}, rt = series(), cl = series(),
              rt_rep = zeros(#RT_BUCKETS + 1), cl_rep = zeros(#CL_BUCKETS + 1),
              rt_min = math.huge, rt_max = 0, cl_min = math.huge, cl_max = 0 }
  local P
  local function new_period()
    P = { created = 0, ok = 0, failed = 0, fails = {}, rt = series(), cl = series() }
  end
  new_period()
  local errors = {}
  local hist_rt, hist_cl = zeros(#HIST + 1), zeros(#HIST + 1)
  local running = 0
  local peak, peak_at = 0, 0
  local retrans0 = retrans()
  local retrans_p0 = retrans0

  local t0 = core.now()
  local t_period = t0
  local stopped

  -- the calls in flight, oldest first: each a record { t = start } that
  -- the call's end marks done; the pacer times out the oldest
  local fifo, fhead, ftail = {}, 1, 0

  local function record_failure(why)
    errors[why] = (errors[why] or 0) + 1
    local col = fail_column(why)
    if col then
      C.fails[col] = (C.fails[col] or 0) + 1
      P.fails[col] = (P.fails[col] or 0) + 1
    end
    C.failed = C.failed + 1
    P.failed = P.failed + 1
  end

  local function finish_call(rec, ok, why)
    if rec.done then return end
    rec.done = true
    running = running - 1
    local now = core.now()
    local len = now - rec.t
    local rt = rec.rt or len
    add(C.cl, len); add(P.cl, len)
    add(C.rt, rt); add(P.rt, rt)
    bucket_counts(RT_BUCKETS, C.rt_rep, rt * 1000)
    bucket_counts(CL_BUCKETS, C.cl_rep, len * 1000)
    local hr, hc = hist_index(rt * 1000), hist_index(len * 1000)
    hist_rt[hr] = hist_rt[hr] + 1
    hist_cl[hc] = hist_cl[hc] + 1
    if rt < C.rt_min then C.rt_min = rt end
    if rt > C.rt_max then C.rt_max = rt end
    if len < C.cl_min then C.cl_min = len end
    if len > C.cl_max then C.cl_max = len end
    if ok then
      C.ok = C.ok + 1
      P.ok = P.ok + 1
    else
      record_failure(why)
    end
  end

  local function reason_of(ok, a, b)
    if not ok then
      -- a raise: its message, without the traceback
      local msg = tostring(b ~= nil and b or a)
      return (msg:match("^[^\n]*"))
    end
    if type(b) == "string" then return b end
    return a == nil and "returned nil" or "returned false"
  end

  local function start_call(i)
    local rec = { t = core.now() }
    ftail = ftail + 1
    fifo[ftail] = rec
    running = running + 1
    C.created = C.created + 1
    P.created = P.created + 1
    if running > peak then peak, peak_at = running, rec.t - t0 end
    local function rtd()
      if not rec.rt then rec.rt = core.now() - rec.t end
    end
    s._spawn_with(function(ok, a, b)
      if ok and a then
        finish_call(rec, true)
      else
        finish_call(rec, false, reason_of(ok, a, b))
      end
    end, run, i, rtd)
  end

  -- calls due by time t since the start: the integral of the rate
  local function due(t)
    if t <= 0 then return 0 end
    if ramp > 0 then
      if t < ramp then return floor(rate * t * t / (2 * ramp)) end
      return floor(rate * ramp / 2 + rate * (t - ramp))
    end
    return floor(rate * t) + 1      -- the first call at once
  end
  -- the time since the start at which call k is due (due's inverse)
  local function time_of(k)
    if ramp > 0 then
      local k_ramp = rate * ramp / 2
      if k <= k_ramp then return sqrt(2 * ramp * k / rate) end
      return ramp + (k - k_ramp) / rate
    end
    return (k - 1) / rate
  end
  local function target_rate(t)
    if ramp > 0 and t < ramp then return rate * t / ramp end
    return rate
  end

  ---------------------------------------------------------------------------
  -- output

  local tty = opts.screen and out == io.stdout and is_tty()
  if stats_f then stats_f:write(header_line(), "\n"); stats_f:flush() end

  local function write_rtt()
    if not rtt_path then return end
    local f = io.open(rtt_path, "w")
    if not f then return end
    f:write("LowerBound_ms;UpperBound_ms;ResponseTime;CallLength\n")
    for i = 1, #HIST + 1 do
      f:write(fmt("%d;%s;%d;%d\n", i == 1 and 0 or HIST[i - 1], HIST[i] and tostring(HIST[i]) or "",
                  hist_rt[i], hist_cl[i]))
    end
    f:close()
  end

  local function stats_row(now)
    if not stats_f then return end
    local pe, ce = now - t_period, now - t0
    local r = {
      date3(t0), date3(t_period), date3(now), hms(pe), hms(ce), num(target_rate(ce)),
      num(pe > 0 and P.created / pe or 0), num(ce > 0 and C.created / ce or 0),
      "0", "0", num(P.created), num(C.created), num(C.created), num(running),
      num(P.ok), num(C.ok), num(P.failed), num(C.failed),
    }
    for _, col in ipairs(FAIL_COLUMNS) do
      r[#r + 1] = num(P.fails[col] or 0)
      r[#r + 1] = num(C.fails[col] or 0)
    end
    local rx = retrans()
    r[#r + 1] = "0"; r[#r + 1] = "0"                            -- OutOfCallMsgs
    r[#r + 1] = "0"; r[#r + 1] = "0"                            -- DeadCallMsgs
    r[#r + 1] = num(rx - retrans_p0); r[#r + 1] = num(rx - retrans0)
    retrans_p0 = rx
    for _ = 1, 5 do r[#r + 1] = "0"; r[#r + 1] = "0" end        -- AutoAnswered .. WatchdogMinor
    r[#r + 1] = hmsu(mean(P.rt)); r[#r + 1] = hmsu(mean(C.rt))
    r[#r + 1] = hmsu(stdev(P.rt)); r[#r + 1] = hmsu(stdev(C.rt))
    r[#r + 1] = hmsu(mean(P.cl)); r[#r + 1] = hmsu(mean(C.cl))
    r[#r + 1] = hmsu(stdev(P.cl)); r[#r + 1] = hmsu(stdev(C.cl))
    r[#r + 1] = ""
    for _, c in ipairs(C.rt_rep) do r[#r + 1] = num(c) end
    r[#r + 1] = ""
    for _, c in ipairs(C.cl_rep) do r[#r + 1] = num(c) end
    stats_f:write(table.concat(r, ";"), ";\n")
    stats_f:flush()
  end

  local function ms(x) return x and fmt("%.1f ms", x * 1000) or "-" end

  local function screen(now, last)
    local ce = now - t0
    local pe = max(now - t_period, 1e-9)
    local lines = {}
    local function L(...) lines[#lines + 1] = fmt(...) end
    L("%s", ("-"):rep(30) .. " luasip load " .. ("-"):rep(37))
    L("  Target rate  Call rate (P)  Call rate (C)  Total-time  Total-calls  Limit")
    L("  %7.1f cps  %9.1f cps  %9.1f cps  %8.2f s  %11d  %s", target_rate(ce), P.created / pe,
      ce > 0 and C.created / ce or 0, ce, C.created,
      (opts.limit and tostring(opts.limit) or "-") .. (opts.duration and (" / " .. opts.duration .. " s") or ""))
    L("")
    L("  %d calls running (concurrency %d)         Peak was %d calls, after %.0f s", running, concurrency,
      peak, peak_at)
    L("")
    L("                      %12s %12s", "Periodic", "Cumulative")
    L("  Calls created       %12d %12d", P.created, C.created)
    L("  Successful calls    %12d %12d", P.ok, C.ok)
    L("  Failed calls        %12d %12d", P.failed, C.failed)
    L("  Retransmissions     %12d %12d", retrans() - retrans_p0, retrans() - retrans0)
    L("  Response time       %12s %12s", ms(P.rt.n > 0 and mean(P.rt) or nil), ms(C.rt.n > 0 and mean(C.rt) or nil))
    L("  Call length         %12s %12s", ms(P.cl.n > 0 and mean(P.cl) or nil), ms(C.cl.n > 0 and mean(C.cl) or nil))
    L("")
    L("  Response time repartition")
    for i, b in ipairs(RT_BUCKETS) do
      L("    %5d ms <= n < %5d ms : %10d", i == 1 and 0 or RT_BUCKETS[i - 1], b, C.rt_rep[i])
    end
    L("             n >= %5d ms : %10d", RT_BUCKETS[#RT_BUCKETS], C.rt_rep[#RT_BUCKETS + 1])
    local reasons = {}
    for why, n in pairs(errors) do reasons[#reasons + 1] = { why, n } end
    table.sort(reasons, function(a, b) return a[2] > b[2] end)
    if #reasons > 0 then
      L("")
      L("  Failures")
      for k = 1, min(#reasons, 8) do L("    %8d  %s", reasons[k][2], reasons[k][1]) end
    end
    L("%s", ("-"):rep(79))
    if last then L("  done: %s", stopped or "?") end
    out:write("\27[H\27[2J", table.concat(lines, "\n"), "\n")
    out:flush()
  end

  local function progress(now, last)
    out:write(fmt("%s%8.1f s  created %d  running %d  successful %d  failed %d  rate %.1f/s  retrans %d\n",
                  last and "done " or "", now - t0, C.created, running, C.ok, C.failed,
                  (now - t0) > 0 and C.created / (now - t0) or 0, retrans() - retrans0))
    out:flush()
  end

  local next_report = t0 + 1
  local next_stats = t0 + every
  -- as SIPp does: a first row at the start, all zeros
  stats_row(t0)
  local function report(now, last)
    if opts.screen and (now >= next_report or last) then
      if tty then screen(now, last) else progress(now, last) end
      next_report = now + 1
    end
    if now >= next_stats or last then
      stats_row(now)
      write_rtt()
      next_stats = now + every
      t_period = now
      new_period()
    end
  end

  ---------------------------------------------------------------------------
  -- the pacer: this coroutine

  local started = 0
  local limit = opts.limit or math.huge
  local t_end = opts.duration and (t0 + opts.duration) or math.huge

  local function expire(now)
    while fhead <= ftail do
      local rec = fifo[fhead]
      if rec.done then
        fifo[fhead] = nil
        fhead = fhead + 1
      elseif now - rec.t >= call_timeout then
        fifo[fhead] = nil
        fhead = fhead + 1
        finish_call(rec, false, "timeout")
        C.timed_out = C.timed_out + 1
      else
        return rec.t + call_timeout
      end
    end
    return math.huge
  end

  while true do
    local now = core.now()
    if started >= limit then stopped = "limit"; break end
    if now >= t_end then stopped = "duration"; break end
    local n = min(due(now - t0), limit) - started
    while n > 0 and running < concurrency do
      started = started + 1
      n = n - 1
      start_call(started)
    end
    now = core.now()
    local next_timeout = expire(now)
    report(now)
    -- wake for the next call due, a report, or the oldest call's
    -- timeout; when every slot is taken, look again every 10 ms (or
    -- sooner at high rates) for a call that ended
    local next_due
    if running >= concurrency then
      next_due = now + min(0.01, 1 / rate)
    else
      next_due = t0 + time_of(started + 1)
    end
    local wake_at = min(next_due, next_report, next_stats, next_timeout, t_end)
    local slept, why = s.sleep(max(0.0005, wake_at - core.now()))
    -- the wait ended early (sip.first, the hangup of a call this runs
    -- in): no more calls start; those running are waited for
    if not slept then stopped = why or "cancelled"; break end
  end

  -- the rest: wait for the calls in flight (each bounded by its timeout)
  while running > 0 do
    local now = core.now()
    local next_timeout = expire(now)
    report(now)
    if running == 0 then break end
    s.sleep(max(0.0005, min(now + 0.01, next_report, next_stats, next_timeout) - core.now()))
  end
  local now = core.now()
  report(now, true)
  if stats_f then stats_f:close() end

  local elapsed = now - t0
  local function summary_of(ser, hist, lo, hi)
    if ser.n == 0 then return { n = 0 } end
    return { n = ser.n, min = lo, max = hi, mean = mean(ser), stdev = stdev(ser),
             p50 = percentile(hist, ser.n, 0.50, lo * 1000, hi * 1000),
             p90 = percentile(hist, ser.n, 0.90, lo * 1000, hi * 1000),
             p99 = percentile(hist, ser.n, 0.99, lo * 1000, hi * 1000) }
  end
  return {
    created = C.created, successful = C.ok, failed = C.failed, timed_out = C.timed_out,
    elapsed = elapsed, rate = elapsed > 0 and C.created / elapsed or 0, target_rate = rate,
    retransmissions = retrans() - retrans0, errors = errors, stopped = stopped, peak = peak,
    response = summary_of(C.rt, hist_rt, C.rt_min, C.rt_max),
    call_length = summary_of(C.cl, hist_cl, C.cl_min, C.cl_max),
  }
end

return load
