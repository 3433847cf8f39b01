--- sip.load: a call flow as a load test, against SIPp's own count of the
-- same calls (sipp -sn uas, and spec/scenarios/uas_busy_share.xml that
-- answers every call marked "X-Busy: yes" with 486), with SIPp's
-- -trace_stat columns in our CSV; the pacing, the concurrency bound, the
-- timeout and the failures counted by reason without a peer; and the
-- `luasip load` command with examples/load.lua.
local sip = require "sip"
local helper = require "helper"

local sh = helper.shell_quote

-- a ";"-terminated CSV as SIPp writes it: the header's names, rows by name
local function read_csv(path)
  local f = assert(io.open(path))
  local header = f:read("l")
  local names = {}
  for n in header:gmatch("([^;]*);") do names[#names + 1] = n end
  local rows = {}
  for line in f:lines() do
    local r, i = {}, 0
    for v in line:gmatch("([^;]*);") do
      i = i + 1
      r[names[i]] = v
    end
    r._n = i
    rows[#rows + 1] = r
  end
  f:close()
  return names, rows
end

local function tmp(name)
  local p = helper.tmp .. "/load-" .. math.random(1, 1e9) .. "-" .. name
  os.remove(p)
  return p
end

-- one call to uri: INVITE, then BYE once answered; every fifth marked busy
local function flow(ua, uri, busy_share)
  return function(i, rtd)
    local headers = busy_share and i % 5 == 0 and { ["X-Busy"] = "yes" } or nil
    local call, err = ua:invite(uri, { timeout = 10, headers = headers })
    if not call then return nil, err end
    rtd()
    return call:hangup()
  end
end

describe("sip.load against SIPp", function()
  after_each(function() helper.stop_all() end)

  it("counts what SIPp's uas counts, and writes SIPp's -trace_stat columns", function()
    local port = helper.free_port()
    local sipp_csv, ours, rtt = tmp("sipp.csv"), tmp("ours.csv"), tmp("rtt.csv")
    finally(function() os.remove(sipp_csv); os.remove(ours); os.remove(rtt) end)
    local N = 400
    local uas = helper.sipp{ sn = "uas", port = port,
                             args = { "-m", N, "-trace_stat", "-fd", "1", "-stf", sipp_csv } }
    local ua <close> = assert(sip.ua{})
    local progress = assert(io.open(tmp("progress.txt"), "w+"))
    local r = sip.test.run(function()
      return sip.load{ rate = 200, limit = N, concurrency = 100, ua = ua,
                       run = flow(ua, "sip:service@127.0.0.1:" .. port),
                       stats = ours, rtt = rtt, screen = true, output = progress }
    end, 30)
    assert.are.equal(N, r.created)
    assert.are.equal(N, r.successful)
    assert.are.equal(0, r.failed)
    assert.are.equal("limit", r.stopped)
    assert.same({}, r.errors)
    -- the rate held: 400 calls at 200 per second take 2 s
    assert.is_true(r.elapsed > 1.9 and r.elapsed < 3, "elapsed " .. r.elapsed)
    assert.is_true(r.rate > 150, "rate " .. r.rate)
    assert.are.equal(N, r.response.n)
    assert.is_true(r.response.p50 <= r.response.p99 and r.response.p99 <= r.response.max + 1e-9)
    -- SIPp's uas ends each call a while after its BYE, then exits (-m)
    assert.are.equal(0, uas:wait(15), uas.log())
    local sipp_names, sipp_rows = read_csv(sipp_csv)
    local last = sipp_rows[#sipp_rows]
    assert.are.equal(N, tonumber(last["TotalCallCreated"]))
    assert.are.equal(N, tonumber(last["IncomingCall(C)"]))
    assert.are.equal(r.successful, tonumber(last["SuccessfulCall(C)"]))
    assert.are.equal(r.failed, tonumber(last["FailedCall(C)"]))
    -- our CSV: SIPp's header, column for column; rows that parse
    local names, rows = read_csv(ours)
    assert.are.same(sipp_names, names)
    assert.is_true(#rows >= 3)
    for _, row in ipairs(rows) do assert.are.equal(#names, row._n) end
    local mine = rows[#rows]
    assert.are.equal(N, tonumber(mine["OutgoingCall(C)"]))
    assert.are.equal(N, tonumber(mine["TotalCallCreated"]))
    assert.are.equal(N, tonumber(mine["SuccessfulCall(C)"]))
    assert.are.equal(0, tonumber(mine["FailedCall(C)"]))
    assert.are.equal(0, tonumber(mine["CurrentCall"]))
    assert.are.equal(200, tonumber(mine["TargetRate"]))
    assert.matches("^%d%d:%d%d:%d%d:%d%d%d%d%d%d$", mine["ResponseTime1(C)"])
    assert.matches("^%d%d%d%d%-%d%d%-%d%d\t%d%d:%d%d:%d%d%.%d+\t%d+%.%d+$", mine["StartTime"])
    local sum_p, rep = 0, 0
    for _, row in ipairs(rows) do sum_p = sum_p + tonumber(row["SuccessfulCall(P)"]) end
    assert.are.equal(N, sum_p)
    for _, n in ipairs(names) do
      if n:match("^ResponseTimeRepartition1_") then rep = rep + tonumber(mine[n]) end
    end
    assert.are.equal(N, rep)
    -- the histogram: every response time in one bucket
    local f = assert(io.open(rtt))
    assert.are.equal("LowerBound_ms;UpperBound_ms;ResponseTime;CallLength", f:read("l"))
    local total = 0
    for line in f:lines() do total = total + tonumber(line:match("^[^;]*;[^;]*;(%d+);")) end
    f:close()
    assert.are.equal(N, total)
    -- not on a terminal: a progress line a second, and the last one
    progress:seek("set")
    local text = progress:read("a")
    progress:close()
    assert.matches("created %d+  running %d+  successful %d+  failed 0", text)
    assert.matches("done +[%d.]+ s  created 400  running 0  successful 400  failed 0", text)
  end)

  it("reports the calls a uas answers with 486, by reason and in FailedUnexpectedMessage", function()
    local port = helper.free_port()
    local ours = tmp("busy.csv")
    finally(function() os.remove(ours) end)
    local N = 200
    local uas = helper.sipp{ sf = "uas_busy_share.xml", port = port, args = { "-m", N } }
    local ua <close> = assert(sip.ua{})
    local r = sip.test.run(function()
      return sip.load{ rate = 200, limit = N, run = flow(ua, "sip:service@127.0.0.1:" .. port, true),
                       stats = ours, stats_every = 0.5, ua = ua }
    end, 30)
    assert.are.equal(N, r.created)
    assert.are.equal(N / 5, r.failed)
    assert.are.equal(N - N / 5, r.successful)
    assert.same({ ["486 Busy Here"] = N / 5 }, r.errors)
    local _, rows = read_csv(ours)
    local last = rows[#rows]
    assert.are.equal(N / 5, tonumber(last["FailedCall(C)"]))
    assert.are.equal(N / 5, tonumber(last["FailedUnexpectedMessage(C)"]))
    assert.are.equal(N - N / 5, tonumber(last["SuccessfulCall(C)"]))
    -- SIPp went through every call of its scenario, the 486 ones included
    assert.are.equal(0, uas:wait(15), uas.log())
  end)
end)

describe("sip.load", function()
  it("keeps at most `concurrency` calls running and starts the late ones when a slot frees", function()
    local running, peak = 0, 0
    local r = sip.test.run(function()
      return sip.load{ rate = 1000, limit = 40, concurrency = 10, run = function()
        running = running + 1
        if running > peak then peak = running end
        sip.sleep(0.1)
        running = running - 1
        return true
      end }
    end, 10)
    assert.are.equal(10, peak)
    assert.are.equal(10, r.peak)
    assert.are.equal(40, r.successful)
    -- four waves of ten 0.1 s calls
    assert.is_true(r.elapsed >= 0.39 and r.elapsed < 0.8, "elapsed " .. r.elapsed)
  end)

  it("counts failures by reason: a false return, a returned reason, a raise, a timeout", function()
    local r = sip.test.run(function()
      return sip.load{ rate = 500, limit = 40, timeout = 0.3, run = function(i)
        if i % 4 == 1 then return false end
        if i % 4 == 2 then return nil, "no answer" end
        if i % 4 == 3 then error("boom " .. (i % 2), 0) end
        if i == 4 then sip.sleep(1) end       -- longer than the timeout
        return true
      end }
    end, 10)
    assert.are.equal(40, r.created)
    assert.are.equal(9, r.successful)
    assert.are.equal(31, r.failed)
    assert.are.equal(1, r.timed_out)
    assert.same({ ["returned false"] = 10, ["no answer"] = 10, ["boom 1"] = 10, timeout = 1 }, r.errors)
  end)

  it("paces calls at the rate, stops at the duration, and ramps up", function()
    local r = sip.test.run(function()
      return sip.load{ rate = 40, duration = 0.5, run = function() return true end }
    end, 10)
    assert.are.equal("duration", r.stopped)
    -- at 0 s, then every 25 ms up to 0.5 s
    assert.is_true(r.created >= 19 and r.created <= 21, "created " .. r.created)
    local ramped = sip.test.run(function()
      return sip.load{ rate = 100, ramp = 1, duration = 1, run = function() return true end }
    end, 10)
    -- half the calls of a full second: the rate grows from 0 to 100
    assert.is_true(ramped.created >= 45 and ramped.created <= 52, "created " .. ramped.created)
  end)

  it("raises for bad options, naming sip.load", function()
    helper.raises("bad argument #1 to 'sip.load' %(option 'run' %(a function%) is required%)",
                  sip.load, { limit = 1 })
    helper.raises("give option 'limit' or 'duration'", sip.load, { run = print })
    helper.raises("unknown option 'rte'", sip.load, { rte = 1, limit = 1, run = print })
    helper.raises("option 'limit' must be an integer", sip.load, { limit = 1.5, run = print })
    helper.raises("option 'rate' must be positive", sip.load, { rate = 0, limit = 1, run = print })
    helper.raises("sip.load: must be called from a coroutine run by luasip", sip.load, { limit = 1, run = print })
    local err = helper.raises("option 'stats'", function()
      sip.test.run(function() sip.load{ limit = 1, run = print, stats = "/nonexistent-dir/x.csv" } end, 5)
    end)
    assert.matches("load_spec.lua:%d+:", err)
  end)
end)

describe("luasip load", function()
  after_each(function() helper.stop_all() end)

  it("runs examples/load.lua's flow against SIPp and prints the summary; exit 1 on failures", function()
    local port = helper.free_port()
    helper.sipp{ sn = "uas", port = port }
    local ours = tmp("cli.csv")
    finally(function() os.remove(ours) end)
    local cmd = sh(helper.root .. "/bin/luasip") .. " load " .. sh(helper.root .. "/examples/load.lua") ..
                " -r 100 -m 50 -l 20 --stats " .. sh(ours) .. " -- sip:service@127.0.0.1:" .. port
    local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
    local out = p:read("a")
    p:close()
    assert.matches("50 calls: 50 successful, 0 failed in [%d.]+ s %([%d.]+ calls/s, target 100%.0%)", out)
    assert.matches("response time: min [%d.]+ ms", out)
    assert.matches("rc=0", out)
    local _, rows = read_csv(ours)
    assert.are.equal(50, tonumber(rows[#rows]["SuccessfulCall(C)"]))
    -- on a terminal: SIPp's main screen, redrawn
    if os.execute("command -v script >/dev/null") then
      p = io.popen("script -qc " .. sh(cmd:gsub("%-m 50", "-m 120")) .. " /dev/null 2>&1")
      out = p:read("a")
      p:close()
      assert.matches("\27%[H\27%[2J%-+ luasip load %-+", out)
      assert.matches("Successful calls +%d+ +%d+", out)
      assert.matches("Response time repartition", out)
    end
    -- nobody there: every call fails, exit status 1
    local dead = helper.free_port()
    p = io.popen(sh(helper.root .. "/bin/luasip") .. " load " .. sh(helper.root .. "/examples/load.lua") ..
                 " -r 50 -m 3 -t 0.5 -q -- sip:nobody@127.0.0.1:" .. dead .. " 2>&1; echo \"rc=$?\"")
    out = p:read("a")
    p:close()
    assert.matches("3 calls: 0 successful, 3 failed", out)
    assert.matches("rc=1", out)
    p = io.popen(sh(helper.root .. "/bin/luasip") .. " load 2>&1; echo \"rc=$?\"")
    out = p:read("a")
    p:close()
    assert.matches("no script", out)
    assert.matches("rc=2", out)
  end)
end)
