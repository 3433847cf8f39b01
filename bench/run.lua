#!/usr/bin/env lua5.4
-- bench/run.lua: the luasip benchmark harness (issues 7 and 14, DESIGN.md "Performance").
--
--   lua5.4 bench/run.lua            full run (about 20 minutes), writes bench/RESULTS.md
--   lua5.4 bench/run.lua --smoke    a few seconds: tiny runs of every measurement; exits 0
--                                   when they all ran, whatever the figures
--   lua5.4 bench/run.lua --only media [--media-steps 100,1000]
--                                   section 6 alone (media streams), its section of
--                                   bench/RESULTS.md replaced and the rest kept
--   lua5.4 bench/run.lua --only dtmf [--dtmf-steps 250,1000]
--                                   section 7 alone (DTMF digits while a prompt plays)
--   lua5.4 bench/run.lua --only network
--                                   section 8 alone (luasip -w 2 against -w 1; DNS lookups)
--   lua5.4 bench/run.lua --only subscriptions
--                                   section 9 alone (SUBSCRIBE/NOTIFY against SIPp; 10,000 live
--                                   subscriptions; a NOTIFY's cost with 100 and with 10,000)
--   lua5.4 bench/run.lua --only bridging [--relay-steps 100,1000]
--                                   section 10 alone (calls a second through the luasip B2BUA;
--                                   RTP relayed by it: CPU, loss, the relay's latency)
--
-- Run from the repository root after `make build` (make bench / make bench-smoke do both).
-- Plain Lua 5.4: the peers are SIPp and the Lua scripts bench/uas.lua and bench/uac.lua
-- started with bin/luasip, each in a session of its own (setsid) so that every process
-- the harness started is killed, process group by process group, on every path out.
-- See bench/README.md for what each figure means.

local SMOKE = false
local ONLY              -- --only media|dtmf|network|subscriptions|bridging: that section alone, spliced into RESULTS.md
local MEDIA_STEPS_ARG   -- --media-steps 100,1000: the media section's stream counts
local DTMF_STEPS_ARG    -- --dtmf-steps 250,1000: the DTMF section's call counts
local RELAY_STEPS_ARG   -- --relay-steps 100,1000: the bridging section's relayed call counts
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--smoke" then
      SMOKE = true
    elseif a == "--only" and (arg[i + 1] == "media" or arg[i + 1] == "dtmf" or arg[i + 1] == "network" or
                              arg[i + 1] == "subscriptions" or arg[i + 1] == "bridging") then
      ONLY = arg[i + 1]
      i = i + 1
    elseif a == "--media-steps" and (arg[i + 1] or ""):match("^[%d,]+$") then
      MEDIA_STEPS_ARG = arg[i + 1]
      i = i + 1
    elseif a == "--dtmf-steps" and (arg[i + 1] or ""):match("^[%d,]+$") then
      DTMF_STEPS_ARG = arg[i + 1]
      i = i + 1
    elseif a == "--relay-steps" and (arg[i + 1] or ""):match("^[%d,]+$") then
      RELAY_STEPS_ARG = arg[i + 1]
      i = i + 1
    elseif a == "-h" or a == "--help" then
      print("usage: lua5.4 bench/run.lua [--smoke] [--only media|dtmf|network|subscriptions|bridging] " ..
            "[--media-steps N,N,...] [--dtmf-steps N,N,...] [--relay-steps N,N,...]")
      os.exit(0)
    else
      io.stderr:write("bench/run.lua: unknown argument ", a, "\n")
      os.exit(2)
    end
    i = i + 1
  end
end

---------------------------------------------------------------------------
-- Small helpers

local fmt = string.format

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function sh(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  local out = p:read("a") or ""
  p:close()
  return (out:gsub("%s+$", ""))
end

local function have(prog)
  return os.execute("command -v " .. q(prog) .. " >/dev/null 2>&1") == true
end

local function readfile(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function writefile(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- os.execute (system()) ignores SIGINT in the harness while the child
-- runs: a Ctrl-C kills the sleep, and that is raised here so that the
-- processes started so far are killed on the way out
local function sleep(s)
  if s <= 0 then return end
  local _, how, code = os.execute(fmt("sleep %.3f", s))
  if how == "signal" and (code == 2 or code == 15) then error("interrupted", 0) end
end

-- wall clock with 10 ms resolution (plain Lua has only whole seconds)
local function now()
  local s = readfile("/proc/uptime")
  return tonumber(s and s:match("^(%S+)")) or os.time()
end

local CLK_TCK = tonumber(sh("getconf CLK_TCK")) or 100

-- utime + stime of a process, in seconds (nil once it is gone)
local function cpu_of(pid)
  local s = pid and readfile("/proc/" .. pid .. "/stat")
  if not s then return nil end
  local rest = s:match("%)%s+(.*)$")
  local f = {}
  for w in rest:gmatch("%S+") do f[#f + 1] = w end
  -- after "pid (comm)": state is field 3, utime 14, stime 15
  return (tonumber(f[12]) + tonumber(f[13])) / CLK_TCK, tonumber(f[13]) / CLK_TCK
end

local function status_kb(pid, field)
  local s = pid and readfile("/proc/" .. pid .. "/status")
  return s and tonumber(s:match(field .. ":%s*(%d+)%s*kB"))
end

-- utime + stime of a process and its descendants (luasip -w N: the
-- supervisor and its workers)
local function cpu_tree(pid)
  local t, sys = cpu_of(pid)
  if not t then return nil end
  local kids = readfile("/proc/" .. pid .. "/task/" .. pid .. "/children") or ""
  for c in kids:gmatch("%d+") do
    local ct, cs = cpu_tree(c)
    if ct then t, sys = t + ct, sys + cs end
  end
  return t, sys
end

local SELF_PID = (readfile("/proc/self/stat") or ""):match("^(%d+)")

local function pct(x) return fmt("%.0f%%", x * 100) end
local function us(x) return x and fmt("%.1f", x * 1e6) or "-" end
local function thousands(n)
  local s = fmt("%.0f", n)
  local r = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (r:gsub("^,", ""))
end

---------------------------------------------------------------------------
-- Where things are

local ROOT = sh("pwd")
if not readfile(ROOT .. "/bench/uas.lua") then
  local here = (arg[0] or ""):match("^(.*)/bench/[^/]*$")
  if here and readfile(here .. "/bench/uas.lua") then
    ROOT = sh("cd " .. q(here) .. " && pwd")
  else
    io.stderr:write("bench/run.lua: run it from the repository root\n")
    os.exit(2)
  end
end
local LUASIP = ROOT .. "/bin/luasip"
local TMP = sh("mktemp -d /tmp/luasip-bench.XXXXXX")
assert(TMP ~= "", "mktemp failed")

local report = {}          -- the lines of RESULTS.md
local function out(line)   -- a figure: printed and kept for RESULTS.md
  line = line or ""
  print(line)
  report[#report + 1] = line
end
local function note(line)  -- progress: printed only
  io.stdout:write("  .. ", line, "\n")
  io.stdout:flush()
end
local warnings = {}
local function warn(line)
  warnings[#warnings + 1] = line
  io.stdout:write("  !! ", line, "\n")
  io.stdout:flush()
end

---------------------------------------------------------------------------
-- Processes: each in its own session; pid, exit code and CPU (`times`)
-- of the real program are written by the wrapper shell into TMP

local procs = {}
local seq = 0

-- the process group of a process (field 5 of /proc/PID/stat)
local function pgrp_of(pid)
  local s = readfile("/proc/" .. pid .. "/stat")
  local rest = s and s:match("%)%s+(.*)$")
  return rest and tonumber(rest:match("^%S+%s+%S+%s+(%d+)"))
end

-- alive and not a zombie (reparented shells may stay zombies: PID 1 here
-- does not always reap them)
local function alive(pid)
  local s = pid and readfile("/proc/" .. pid .. "/stat")
  local state = s and s:match("%)%s+(%S)")
  return state ~= nil and state ~= "Z"
end

local function spawn(name, cmd)
  seq = seq + 1
  local base = fmt("%s/%02d-%s", TMP, seq, name)
  local p = { name = name, out = base .. ".out", pidf = base .. ".pid", rcf = base .. ".rc",
              timesf = base .. ".times", cmd = cmd }
  -- the shell setsid runs is the session and group leader; the program is
  -- its child in the same group, its pid written to pidf; then its exit
  -- code and CPU (`times`)
  local inner = "cd " .. q(TMP) .. " || exit 1; " .. cmd .. " >" .. q(p.out) .. " 2>&1 </dev/null & echo $! >" ..
                q(p.pidf) .. "; wait $!; rc=$?; times >" .. q(p.timesf) .. "; echo $rc >" .. q(p.rcf .. ".t") ..
                " && mv " .. q(p.rcf .. ".t") .. " " .. q(p.rcf)
  local h = io.popen("setsid sh -c " .. q(inner) .. " </dev/null >/dev/null 2>&1 & echo $!")
  p.leader = tonumber(h:read("l"))
  h:close()
  assert(p.leader, "could not start " .. name)
  procs[#procs + 1] = p
  local deadline = now() + 5
  repeat
    p.pid = tonumber(readfile(p.pidf) or "")
    if p.pid then break end
    sleep(0.02)
  until now() > deadline
  assert(p.pid, "no pid for " .. name)
  -- the group to kill is the program's own (read back, not assumed)
  p.pgid = pgrp_of(p.pid) or p.leader
  if p.pgid <= 1 or p.pgid == pgrp_of(SELF_PID) then
    error("bench/run.lua: " .. name .. " did not get a process group of its own", 0)
  end
  return p
end

local function rc_of(p)
  return tonumber(readfile(p.rcf) or "")
end

local function wait_proc(p, timeout)
  local deadline = now() + timeout
  while now() < deadline do
    local rc = rc_of(p)
    if rc then return rc end
    sleep(0.1)
  end
  return nil
end

local function kill(p)
  if p.killed then return end
  p.killed = true
  -- "kill -SIG -PGID": dash's kill (os.execute runs /bin/sh) rejects "--"
  os.execute("kill -TERM -" .. p.pgid .. " 2>/dev/null")
  for _ = 1, 40 do
    if not alive(p.pid) then break end
    sleep(0.05)
  end
  os.execute("kill -KILL -" .. p.pgid .. " 2>/dev/null")
end

local function kill_all()
  for _, p in ipairs(procs) do kill(p) end
end

-- children CPU reported by the wrapper's `times` (user + system), seconds
local function times_cpu(p)
  local s = readfile(p.timesf)
  if not s then return nil end
  local lines = {}
  for l in s:gmatch("[^\n]+") do lines[#lines + 1] = l end
  local l = lines[2]
  if not l then return nil end
  local t = 0
  for m, sec in l:gmatch("(%d+)m([%d.]+)s") do t = t + tonumber(m) * 60 + tonumber(sec) end
  return t
end

local function tail(path, n)
  local s = readfile(path) or ""
  local lines = {}
  for l in s:gmatch("[^\n]*") do if l ~= "" then lines[#lines + 1] = l end end
  return table.concat(lines, "\n", math.max(1, #lines - (n or 5) + 1))
end

---------------------------------------------------------------------------
-- Ports

local handed = {}
local function in_use(port)
  local hex = fmt(":%04X ", port)
  for _, f in ipairs{ "udp", "udp6", "tcp", "tcp6" } do
    local s = readfile("/proc/net/" .. f) or ""
    if s:find(hex, 1, true) then return true end
  end
  return false
end

math.randomseed(os.time(), tonumber(SELF_PID) or 0)
local function free_port()
  for _ = 1, 500 do
    local port = math.random(20000, 59999)
    if not handed[port] and not in_use(port) then
      handed[port] = true
      return port
    end
  end
  error("no free port")
end

---------------------------------------------------------------------------
-- Peers

-- the Lua UAS; wrapper: a command prefix (valgrind), startup: seconds to wait;
-- luasip_args: before the script ("-w 2"), workers: READY lines to wait for
local function start_lua_uas(opts)
  opts = opts or {}
  local port = free_port()
  local cmd = (opts.wrapper or "") .. (opts.host and (q(opts.host) .. " ") or "") .. q(LUASIP) .. " " ..
              (opts.luasip_args and (opts.luasip_args .. " ") or "") .. q(ROOT .. "/bench/uas.lua") ..
              " " .. port .. " --parent " .. SELF_PID .. " " .. (opts.args or "")
  local p = spawn(opts.name or "lua-uas", cmd)
  p.port = port
  local deadline = now() + (opts.startup or 10)
  while true do
    local s = readfile(p.out) or ""
    local auth = s:match("READY auth=(%a+)")
    local ready = 0
    for _ in s:gmatch("READY auth=") do ready = ready + 1 end
    if auth and ready >= (opts.workers or 1) then
      p.auth = auth == "yes"
      break
    end
    if rc_of(p) or now() > deadline then
      error("the Lua UAS did not start (" .. cmd .. "):\n" .. tail(p.out, 10), 0)
    end
    sleep(0.05)
  end
  p.idle_rss = status_kb(p.pid, "VmRSS")
  if opts.workers then p.cpu = cpu_tree end
  return p
end

-- the last STAT line of a Lua UAS as a table
local function uas_stat(p)
  local s = readfile(p.out) or ""
  local last
  for l in s:gmatch("STAT [^\n]*") do last = l end
  if not last then return {} end
  local t = {}
  for k, v in last:gmatch("([%w_]+)=([%d.]+)") do t[k] = tonumber(v) end
  return t
end

-- SIPp's socket buffers: its default (-buff_size 65535) drops datagrams on
-- loopback from about 2000 cps on, which would measure SIPp, not the server
local SIPP_BUF = "-buff_size 4194304"

-- SIPp as a server: -sn uas, or -sf file
local function start_sipp_uas(scen, name)
  local port = free_port()
  local cmd = "sipp -nostdin -i 127.0.0.1 -p " .. port .. " " .. scen .. " -timeout 600 " .. SIPP_BUF
  local p = spawn(name or "sipp-uas", cmd)
  p.port = port
  sleep(0.4)
  if rc_of(p) then error("SIPp UAS did not start (" .. cmd .. "):\n" .. tail(p.out, 10), 0) end
  return p
end

local function sipp_rows(path)
  local s = readfile(path)
  if not s then return nil end
  local lines = {}
  for l in s:gmatch("[^\n]+") do lines[#lines + 1] = l end
  if #lines < 2 then return nil end
  local names, rows = {}, {}
  for f in (lines[1] .. ";"):gmatch("([^;]*);") do names[#names + 1] = f end
  for i = 2, #lines do
    local vals, t = {}, {}
    for f in (lines[i] .. ";"):gmatch("([^;]*);") do vals[#vals + 1] = f end
    for j, n in ipairs(names) do t[n] = vals[j] end
    rows[#rows + 1] = t
  end
  return rows
end

local function csv_num(c, name)
  return c and tonumber(c[name]) or 0
end

local function csv_elapsed(c)
  local v = c and c["ElapsedTime(C)"]
  local h, m, s, u = (v or ""):match("(%d+):(%d+):(%d+):(%d+)")
  if not h then return nil end
  return h * 3600 + m * 60 + s + u / 1e6
end

-- when SIPp had created `calls` calls (interpolated between its 1 s rows)
local function creation_time(rows, calls)
  local pt, pc = 0, 0
  for _, r in ipairs(rows or {}) do
    local t, c = csv_elapsed(r), csv_num(r, "TotalCallCreated")
    if t and c >= calls then
      if c == pc then return t end
      return pt + (t - pt) * (calls - pc) / (c - pc)
    end
    if t then pt, pc = t, c end
  end
  return nil
end

-- calls SIPp had created t seconds after it started (interpolated)
local function created_at(rows, t)
  local pt, pc
  for _, r in ipairs(rows or {}) do
    local rt, c = csv_elapsed(r), csv_num(r, "TotalCallCreated")
    if rt and rt >= t then
      if not pt then return nil end
      return pc + (c - pc) * (t - pt) / math.max(1e-9, rt - pt)
    end
    if rt then pt, pc = rt, c end
  end
  return nil
end

-- the drops counter of the UDP socket bound to 127.0.0.1:port (/proc/net/udp)
local function udp_drops(port)
  local s = readfile("/proc/net/udp") or ""
  local hex = fmt(":%04X ", port)
  for line in s:gmatch("[^\n]+") do
    local f = {}
    for w in line:gmatch("%S+") do f[#f + 1] = w end
    if f[2] and (f[2] .. " "):find(hex, 1, true) then return tonumber(f[#f]) end
  end
  return nil
end

-- SIPp as a client; returns the process (csv in p.csv)
local function start_sipp_uac(o)
  local lport = free_port()
  local csv = fmt("%s/sipp-%d.csv", TMP, lport)
  local cmd = table.concat({
    "sipp -nostdin -i 127.0.0.1 -p", lport, o.scen, SIPP_BUF,
    "-r", o.rate, "-rp 1000", "-m", o.calls, "-l", o.limit or math.max(200, o.rate * 2),
    o.duration and ("-d " .. o.duration) or "",
    "-timeout", fmt("%ds", math.ceil(o.timeout or 30)), "-timeout_error",
    "-trace_stat -stf", q(csv), "-fd 1",
    "127.0.0.1:" .. o.port,
  }, " ")
  local p = spawn(o.name or "sipp-uac", cmd)
  p.csv = csv
  p.lport = lport
  p.t0 = now()
  return p
end

-- run SIPp's client to the end and say how it went; o.server (a process
-- with pid and port) is watched: its CPU and both sides' socket drops
local function run_sipp_uac(o)
  local p = start_sipp_uac(o)
  local srv = o.server
  local traffic = o.calls / o.rate            -- seconds of call creation asked
  local deadline = p.t0 + (o.timeout or 30) + 15
  local c_drops, s_drops0 = 0, srv and srv.port and udp_drops(srv.port) or 0
  local sa, sb                                -- samples during the traffic
  local rc
  while true do
    rc = rc_of(p)
    if rc or now() > deadline then break end
    local t = now()
    c_drops = udp_drops(p.lport) or c_drops
    if t - p.t0 >= 0.3 and t - p.t0 <= traffic then
      local smp = { t = t, u = cpu_of(p.pid), s = srv and (srv.cpu or cpu_of)(srv.pid) }
      if smp.u then
        if not sa then sa = smp else sb = smp end
      end
    end
    sleep(0.1)
  end
  local wall = now() - p.t0
  if not rc then kill(p) end
  local rows = sipp_rows(p.csv)
  local c = rows and rows[#rows]
  if not c then
    error("SIPp client produced no statistics (" .. p.cmd .. "):\n" .. tail(p.out, 10), 0)
  end
  local r = {
    rc = rc, calls = o.calls, rate = o.rate,
    ok = csv_num(c, "SuccessfulCall(C)"), failed = csv_num(c, "FailedCall(C)"),
    retrans = csv_num(c, "Retransmissions(C)"),
    elapsed = csv_elapsed(c) or wall, wall = wall, cpu = times_cpu(p),
    client_drops = c_drops,
    server_drops = srv and srv.port and ((udp_drops(srv.port) or 0) - s_drops0) or 0,
  }
  local ct = creation_time(rows, o.calls)
  r.achieved = ct and ct > 0 and o.calls / ct or csv_num(c, "CallRate(C)")
  r.clean = rc == 0 and r.failed == 0 and r.ok == o.calls and r.achieved >= 0.9 * o.rate
  r.why = (rc == nil and "SIPp timed out") or (r.failed > 0 and (r.failed .. " failed")) or
          (r.ok < o.calls and ((o.calls - r.ok) .. " unfinished")) or
          (r.achieved < 0.9 * o.rate and fmt("rate reached %.0f", r.achieved)) or
          (rc ~= 0 and ("SIPp exit " .. tostring(rc))) or "ok"
  -- the share of a core each used while the calls were being created
  if sa and sb and sb.t - sa.t >= 0.25 then
    r.uac_load = (sb.u - sa.u) / (sb.t - sa.t)
    r.server_load = sb.s and sa.s and (sb.s - sa.s) / (sb.t - sa.t) or nil
  else
    r.uac_load = r.cpu and r.elapsed > 0 and r.cpu / r.elapsed or nil
  end
  return r
end

---------------------------------------------------------------------------
-- A rate ladder: the same client against a fresh server at rising rates,
-- up to the first step with a failure

local STEP = SMOKE and 0.5 or 5    -- seconds of traffic per step

local function ladder_step(o, rate)
  local server = o.server()
  sleep(0.2)
  local cpu = server.cpu or cpu_of
  local c0 = cpu(server.pid)
  local calls = math.max(1, math.floor(rate * STEP))
  local r = run_sipp_uac{ scen = o.scen, rate = rate, calls = calls, port = server.port,
                          timeout = STEP + 10, name = o.client_name, server = server }
  local c1 = cpu(server.pid)
  if not c1 then
    kill(server)
    error(o.label .. ": the server died during the " .. rate .. "/s step:\n" .. tail(server.out, 10), 0)
  end
  r.server_cpu = c1 - c0
  r.server_per = r.ok > 0 and r.server_cpu / r.ok or nil
  r.server_load = r.server_load or r.server_cpu / r.elapsed
  r.stat = uas_stat(server)
  kill(server)
  note(fmt("%-26s %6d/s: %-17s server %s us/%s (%s CPU), SIPp %s CPU, %d retrans, drops %d/%d",
           o.label, rate, r.why, us(r.server_per), o.unit or "call", pct(r.server_load),
           r.uac_load and pct(r.uac_load) or "?", r.retrans, r.server_drops, r.client_drops))
  return r
end

-- Ladders side by side, one rate at a time: each server's step at a rate
-- runs right after the others' at that rate, so a machine whose speed
-- drifts over minutes (2 cores shared with other work) favours no
-- series, as ladders run one after the other would. A ladder stops at its
-- first step with a failure; the others go on.
local function ladders(list)
  local res, n = {}, 0
  for i, o in ipairs(list) do
    res[i] = { steps = {}, top = o.rates[#o.rates] }
    n = math.max(n, #o.rates)
  end
  for k = 1, n do
    for i, o in ipairs(list) do
      local l, rate = res[i], o.rates[k]
      if rate and not l.stopped then
        local r = ladder_step(o, rate)
        l.steps[#l.steps + 1] = r
        if r.clean then l.best = r else l.stopped = true end
      end
    end
  end
  return table.unpack(res, 1, #list)
end

-- the highest clean rate; "≥" when the ladder ended without a failure
local function best_of(l, key)
  if not l or not l.best then return "none" end
  local v = l.best[key or "rate"]
  if l.top and v == l.top then return "≥ " .. v end
  return tostring(v)
end

local function step_at(l, rate)
  for _, s in ipairs(l.steps) do if s.rate == rate then return s end end
end

-- result, CPU per call, CPU share, socket drops (server / SIPp client)
local function cell(s)
  if not s then return "-", "-", "-", "-" end
  local res = s.clean and "0 failed" or s.why
  return res, us(s.server_per), s.server_load and pct(s.server_load) or "-",
         fmt("%d / %d", s.server_drops or 0, s.client_drops or 0)
end

---------------------------------------------------------------------------
-- 1. Server calls

local R = {}

local function section_server_calls()
  local rates = SMOKE and { 50 } or { 500, 1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 15000,
                                      20000 }
  note("1. server calls: SIPp -sn uac against the Lua UAS and against SIPp -sn uas, rate by rate")
  R.lua_uas, R.sipp_uas = ladders{
    { label = "Lua UAS", rates = rates, scen = "-sn uac", server = function() return start_lua_uas() end },
    { label = "SIPp UAS", rates = rates, scen = "-sn uac",
      server = function() return start_sipp_uas("-sn uas") end } }
end

local function render_server_calls()
  local l, s = R.lua_uas, R.sipp_uas
  out("## 1. Server calls: SIPp `-sn uac` against the UAS")
  out()
  out(fmt("Each step: a fresh server, %g s of calls at the rate (INVITE, 180, 200, ACK, BYE, 200; ",
          STEP) ..
      "the Lua UAS rings, answers with the default SDP answer and waits for the BYE; it sends no 100 " ..
      "because its handler rings before the loop next waits, and SIPp's UAS sends none either). " ..
      "CPU per call is the server's utime+stime over the step divided by the calls; " ..
      "the transactions' Timer J/L expiry 32 s later is not in it (section 4 has the " ..
      "steady-state figure that includes it). \"CPU\" is the share of a core each process used " ..
      "while the calls were being created; \"drops\" the datagrams the kernel dropped because a " ..
      "socket's receive buffer was full (server socket / SIPp client socket, from /proc/net/udp). " ..
      "The two servers' steps alternate, rate by rate, so a drift of the machine's speed over the " ..
      "minutes of the run favours neither.")
  out()
  out("| rate (cps) | Lua UAS | CPU/call (us) | CPU | drops | SIPp UAS | CPU/call (us) " ..
      "| CPU | drops | SIPp uac CPU (vs Lua / vs SIPp) |")
  out("|---:|---|---:|---:|---:|---|---:|---:|---:|---:|")
  local n = math.max(#l.steps, #s.steps)
  for i = 1, n do
    local a, b = l.steps[i], s.steps[i]
    local rate = (a or b).rate
    b = step_at(s, rate)
    local ar, ac, al, ad = cell(a)
    local br, bc, bl, bd = cell(b)
    out(fmt("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s |", rate, ar, ac, al, ad, br, bc, bl, bd,
            a and a.uac_load and pct(a.uac_load) or "-", b and b.uac_load and pct(b.uac_load) or "-"))
  end
  out()
  out(fmt("**Highest rate with 0 failed calls: Lua UAS %s cps, SIPp UAS %s cps.**",
          best_of(l), best_of(s)))
  local common = R.common_rate
  if common then
    local a, b = step_at(l, common), step_at(s, common)
    out(fmt("**CPU per call at %d cps: Lua UAS %s us, SIPp UAS %s us (ratio %s).**", common,
            us(a.server_per), us(b.server_per),
            (b.server_per or 0) > 0 and fmt("%.2f", a.server_per / b.server_per) or "-"))
  end
  local function ceiling(ld, who)
    local last = ld.steps[#ld.steps]
    if not last or last.clean then return end
    if last.uac_load and last.uac_load > 0.85 then
      out(fmt("At %d cps against the %s, SIPp's client used %s of a core: the load generator " ..
              "is (near) the ceiling there, not the server.", last.rate, who, pct(last.uac_load)))
    elseif last.server_load and last.server_load > 0.85 then
      out(fmt("At %d cps the %s used %s of a core: the server is the ceiling.", last.rate, who,
              pct(last.server_load)))
    elseif (last.server_drops or 0) > 0 and who:match("^Lua") then
      out(fmt("At %d cps the %s's socket dropped %d datagrams (receive buffer full) while it used %s of a " ..
              "core on average: it falls behind in bursts (scheduling on %s cores shared with SIPp and " ..
              "other work, Lua GC pauses) and its receive buffer does not absorb them (the library asks " ..
              "for 4 MiB, as SIPp's `-buff_size` does here; the kernel caps both at net.core.rmem_max, " ..
              "%s bytes on this machine).", last.rate, who, last.server_drops,
              last.server_load and pct(last.server_load) or "?", sh("nproc"),
              sh("cat /proc/sys/net/core/rmem_max")))
    elseif (last.server_drops or 0) + (last.client_drops or 0) > 0 then
      out(fmt("At %d cps SIPp, on both sides (server %s, client %s of a core, 4 MiB buffers), dropped " ..
              "%d + %d datagrams: the two SIPp processes and the rest of the machine's load on %s " ..
              "cores are the ceiling there.", last.rate, last.server_load and pct(last.server_load) or "?",
              last.uac_load and pct(last.uac_load) or "?", last.server_drops or 0, last.client_drops or 0,
              sh("nproc")))
    else
      out(fmt("At %d cps against the %s neither side was saturated (server %s, SIPp %s): " ..
              "the 2 cores shared by both, and the other load on the machine, are the limit.",
              last.rate, who, pct(last.server_load), last.uac_load and pct(last.uac_load) or "?"))
    end
  end
  ceiling(l, "Lua UAS")
  ceiling(s, "SIPp UAS")
  out()
end

---------------------------------------------------------------------------
-- 2. Client calls

local function section_client_calls()
  local rates = SMOKE and { 50 } or { 500, 1000, 2000, 3000, 4000, 5000, 6000 }
  note("2. client calls: the Lua UAC (bench/uac.lua) into SIPp -sn uas")
  local steps, best = {}, nil
  for _, rate in ipairs(rates) do
    local server = start_sipp_uas("-sn uas")
    local calls = math.max(1, math.floor(rate * STEP))
    local c0, sd0 = cpu_of(server.pid), udp_drops(server.port) or 0
    local uport = free_port()
    local p = spawn("lua-uac", q(LUASIP) .. " " .. q(ROOT .. "/bench/uac.lua") .. " " ..
                    q("sip:bench@127.0.0.1:" .. server.port) .. " " .. rate .. " " .. calls .. " 0 " .. uport)
    local rc, cdrops
    local deadline = now() + STEP + 45
    while now() < deadline do
      rc = rc_of(p)
      if rc then break end
      cdrops = udp_drops(uport) or cdrops
      sleep(0.1)
    end
    local c1 = cpu_of(server.pid)
    local sdrops = (udp_drops(server.port) or 0) - sd0
    if not rc then kill(p) end
    kill(server)
    local text = readfile(p.out) or ""
    local line = text:match("RESULT [^\n]*")
    local r = { rate = rate, calls = calls, client_drops = cdrops or 0, server_drops = sdrops }
    if not line then
      if rc == nil then
        r.why, r.clean = "did not finish in time", false
      else
        error("bench/uac.lua failed (exit " .. tostring(rc) .. "):\n" .. tail(p.out, 10), 0)
      end
    else
      for k, v in line:gmatch("([%w_]+)=(%S+)") do r[k] = tonumber(v) or v end
      r.per = r.ok > 0 and r.cpu / r.ok or nil
      r.load = r.cpu / r.elapsed
      r.server_load = c1 and c0 and (c1 - c0) / r.elapsed or nil
      r.clean = r.failed == 0 and r.ok == calls and r.rate >= 0.9 * rate
      r.why = (r.failed > 0 and (r.failed .. " failed (" .. tostring(r.first_err) .. ")")) or
              (r.rate < 0.9 * rate and fmt("rate reached %.0f", r.rate)) or "ok"
    end
    r.target = rate
    steps[#steps + 1] = r
    note(fmt("%-26s %6d/s: %-17s UAC %s us/call (%s CPU), SIPp UAS %s CPU, drops %d/%d", "Lua UAC", rate,
             r.why, us(r.per), r.load and pct(r.load) or "?", r.server_load and pct(r.server_load) or "?",
             r.client_drops, r.server_drops))
    if not r.clean then break end
    best = r
  end
  R.lua_uac = { steps = steps, best = best, top = rates[#rates] }
end

local function render_client_calls()
  local l = R.lua_uac
  out("## 2. Client calls: a UAC into SIPp `-sn uas`")
  out()
  out(fmt("The Lua UAC (bench/uac.lua: coroutines sharing one schedule, ua:invite then call:hangup at " ..
      "once) places %g s of calls at the rate; its CPU is os.clock() from the first call to the last. " ..
      "SIPp's own `-sn uac` into the same `-sn uas` is the reference (the SIPp/SIPp steps of " ..
      "section 1, CPU from the shell's `times`). SIPp's `-sn uas` takes an INVITE retransmission " ..
      "for an unexpected message and aborts that call: when the UAC's socket drops the 180 and the " ..
      "200 (see drops), the UAC retransmits its INVITE as it must and the call fails on SIPp's side " ..
      "(\"INVITE: timeout\").", STEP))
  out()
  out("| rate (cps) | Lua UAC | Lua UAC CPU/call (us) | Lua UAC CPU | SIPp uac CPU/call (us) " ..
      "| SIPp uac CPU " ..
      "| SIPp UAS CPU (under Lua UAC) | drops (Lua UAC / SIPp UAS) |")
  out("|---:|---|---:|---:|---:|---:|---:|---:|")
  for _, r in ipairs(l.steps) do
    local s = step_at(R.sipp_uas, r.target)
    out(fmt("| %d | %s | %s | %s | %s | %s | %s | %d / %d |", r.target, r.clean and "0 failed" or r.why,
            us(r.per), r.load and pct(r.load) or "-", s and s.cpu and us(s.cpu / math.max(1, s.ok)) or "-",
            s and s.uac_load and pct(s.uac_load) or "-", r.server_load and pct(r.server_load) or "-",
            r.client_drops or 0, r.server_drops or 0))
  end
  out()
  out(fmt("**Highest clean client rate: Lua UAC %s cps; SIPp uac into SIPp uas %s cps.**",
          best_of(l, "target"), best_of(R.sipp_uas)))
  out()
end

---------------------------------------------------------------------------
-- 3. Instructions per call (callgrind)

-- a tiny Lua host linked with liblua5.4.a, which keeps the symbols the
-- stripped /usr/bin/lua5.4 lacks (luaV_execute ... in the profile)
local HOST_C = [[
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
int main(int argc, char **argv)
{
	lua_State *L;
	int i;
	if (argc < 2)
		return 2;
	L = luaL_newstate();
	luaL_openlibs(L);
	lua_createtable(L, argc, 1);
	for (i = 1; i < argc; i++) {
		lua_pushstring(L, argv[i]);
		lua_rawseti(L, -2, i - 1);
	}
	lua_setglobal(L, "arg");
	if (luaL_loadfile(L, argv[1]) != LUA_OK) {
		fprintf(stderr, "%s\n", lua_tostring(L, -1));
		return 1;
	}
	for (i = 2; i < argc; i++)
		lua_pushstring(L, argv[i]);
	if (lua_pcall(L, argc - 2, 0, 0) != LUA_OK) {
		fprintf(stderr, "%s\n", lua_tostring(L, -1));
		return 1;
	}
	lua_close(L);
	return 0;
}
]]

local function build_host()
  local lib
  for _, d in ipairs{ "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib" } do
    if readfile(d .. "/liblua5.4.a") then lib = d .. "/liblua5.4.a" break end
  end
  if not lib or not have("cc") then return nil end
  writefile(TMP .. "/lhost.c", HOST_C)
  local inc = sh("pkg-config --variable=includedir lua5.4")
  inc = (inc ~= "" and inc or "/usr/include") .. "/lua5.4"
  local ok = os.execute(fmt("cc -O2 -g -I%s -o %s %s -Wl,-E -Wl,--whole-archive %s -Wl,--no-whole-archive " ..
                            "-lm -ldl >%s 2>&1", q(inc), q(TMP .. "/lhost"), q(TMP .. "/lhost.c"), q(lib),
                            q(TMP .. "/lhost.log")))
  if ok ~= true then return nil end
  -- it must run bin/luasip like lua5.4 does
  local v = sh(q(TMP .. "/lhost") .. " " .. q(LUASIP) .. " -e 'print(require(\"sip\")._VERSION)'")
  if not v:match("luasip") then return nil end
  return TMP .. "/lhost"
end

-- per-function exclusive Ir from callgrind_annotate
local function annotate(file)
  local p = io.popen("callgrind_annotate --auto=no --inclusive=no --threshold=100 " .. q(file) ..
                     " 2>/dev/null")
  local total, fns = nil, {}
  for line in p:lines() do
    local n, rest = line:match("^%s*([%d,]+)%s+%(%s*[%d.]+%%%)%s+(.-)%s*$")
    if n then
      n = tonumber((n:gsub(",", "")))
      if rest == "PROGRAM TOTALS" then
        total = n
      else
        local obj = rest:match("%[([^%]]*)%]$") or ""
        local loc = rest:gsub("%s*%[[^%]]*%]$", "")
        local src, fn = loc:match("^([^:]*):(.*)$")
        src, fn = src or "", (fn or loc):gsub("'%d+$", "")
        local key = fn .. "\0" .. obj
        local e = fns[key]
        if not e then
          e = { fn = fn, obj = obj, file = src, ir = 0 }
          fns[key] = e
        end
        e.ir = e.ir + n
      end
    end
  end
  p:close()
  return total, fns
end

-- inclusive Ir of a few entry points
local function annotate_inclusive(file, names)
  local p = io.popen("callgrind_annotate --auto=no --inclusive=yes --threshold=100 " .. q(file) ..
                     " 2>/dev/null")
  local res = {}
  for line in p:lines() do
    local n, rest = line:match("^%s*([%d,]+)%s+%(%s*[%d.]+%%%)%s+(.-)%s*$")
    if n then
      local fn = (rest:gsub("%s*%[[^%]]*%]$", ""):match(":([^:]*)$") or ""):gsub("'%d+$", "")
      for _, want in ipairs(names) do
        want = want[1]
        if fn == want and not res[want] then res[want] = tonumber((n:gsub(",", ""))) end
      end
    end
  end
  p:close()
  return res
end

local function category(e)
  local obj = e.obj:match("([^/]*)$") or ""
  if obj:match("^libosipparser2") or obj:match("^libosip2") then return "parse" end
  if obj == "core.so" then
    if ("/" .. e.file):match("/csrc/l_[%w_]*%.c$") then return "binding" end
    if ("/" .. e.file):match("/csrc/core/msg%.c$") then return "parse" end
    return "core"
  end
  if obj:match("^lhost") or obj:match("^lua5%.4") or obj:match("^liblua") then return "lua" end
  if obj:match("^libc%.so") or obj:match("^libc%-") or (obj == "" and e.file:match("^%./")) then
    return "libc"
  end
  if obj:match("^libev") then return "libev" end
  if obj:match("^libcrypto") or obj:match("^libssl") then return "crypto" end
  return "other"
end

local CATS = {
  { "parse", "parsing: our parser (csrc/core/msg.c); libosip2 for target URIs and SDP (osip_*)", "parse" },
  { "core", "our C core: transactions, transport, dialogs (csrc/core: sip_*, txn, conn)", "core" },
  { "binding", "our Lua binding (csrc/l_*.c)", "core" },
  { "lua", "Lua VM, GC, tables, strings (lua_*, luaV_*, luaH_*, luaC_*)", "lua" },
  { "libc", "libc (malloc/free, strings, stdio, syscall wrappers)", "other" },
  { "libev", "libev", "other" },
  { "crypto", "libcrypto (random tags, branches, Call-IDs)", "other" },
  { "other", "other (dynamic linker, valgrind preload)", "other" },
}

-- entry points whose inclusive cost (callees counted) says where a call goes
local INCL = {
  { "sip_ua_receive", "receiving a datagram: parse, match, dispatch (C)" },
  { "sip_msg_parse", "parsing a message (our wrapper)" },
  { "light_parse", "our parser: start line, header index, the fields matched on" },
  { "sip_msg_unref", "freeing messages" },
  { "sip_txn_reply", "building and sending a response" },
  { "sip_txn_server_key", "transaction keys" },
  { "flush_cb", "all Lua work run from the queue (handlers, wake-ups)" },
  { "l_sdp_parse", "sdp.parse (call:answer parses the offer)" },
  { "call_index", "call methods and computed fields (the C __index of sip.Call)" },
  { "luaC_step", "Lua garbage collector" },
  { "GCTM", "__gc finalizers (freeing messages, calls)" },
  { "malloc", "malloc" },
  { "free", "free" },
  { "realloc", "realloc (Lua's allocator included)" },
  { "snprintf", "snprintf" },
}

local function section_callgrind()
  note("3. instructions per call: the Lua UAS under valgrind --tool=callgrind")
  R.cg = { available = false }
  if not have("valgrind") or not have("callgrind_annotate") then
    R.cg.why = "valgrind (callgrind) is not installed"
    warn(R.cg.why)
    return
  end
  local host = build_host()
  R.cg.host = host and "a Lua host linked with liblua5.4.a (Lua's own functions named)" or
              "/usr/bin/lua5.4 (stripped: Lua's internal functions show as addresses)"
  host = host or sh("command -v lua5.4")
  local calls = SMOKE and 10 or 2000
  local rate = SMOKE and 20 or 50
  local drain = not SMOKE
  local function cg_run(name, n, with_calls)
    local outf = TMP .. "/" .. name .. ".callgrind"
    local srv = start_lua_uas{
      name = name, host = host, startup = 120,
      wrapper = "valgrind --tool=callgrind --callgrind-out-file=" .. q(outf) .. " ",
      args = "--stop-after " .. n .. (drain and with_calls and " --drain" or ""),
    }
    local r
    if with_calls then
      r = run_sipp_uac{ scen = "-sn uac", rate = rate, calls = n, port = srv.port,
                        timeout = math.ceil(n / rate) + 30, limit = 200 }
    end
    local rc = wait_proc(srv, drain and 120 or 60)
    if not rc then
      kill(srv)
      error("the Lua UAS under callgrind did not stop:\n" .. tail(srv.out, 5), 0)
    end
    return outf, r, uas_stat(srv)
  end
  -- the smoke skips the run with no call (its figure is not the point)
  local base_file = not SMOKE and cg_run("cg-idle", 0, false)
  local run_file, r, st = cg_run("cg-calls", calls, true)
  local base_total, base_fns = 0, {}
  if base_file then base_total, base_fns = annotate(base_file) end
  local total, fns = annotate(run_file)
  if not total or not base_total then
    error("callgrind_annotate gave no totals", 0)
  end
  R.cg.available = true
  R.cg.calls, R.cg.rate, R.cg.drain, R.cg.run = calls, rate, drain, r
  R.cg.stat = st
  R.cg.total, R.cg.base = total, base_total
  local net = total - base_total
  R.cg.per_call = net / calls
  local cats, list = {}, {}
  for key, e in pairs(fns) do
    local b = base_fns[key]
    local ir = e.ir - (b and b.ir or 0)
    local c = category(e)
    cats[c] = (cats[c] or 0) + ir
    list[#list + 1] = { fn = e.fn, obj = e.obj:match("([^/]*)$") or e.obj, ir = ir, cat = c }
  end
  table.sort(list, function(a, b) return a.ir > b.ir end)
  R.cg.cats, R.cg.list = cats, list
  local bincl = base_file and annotate_inclusive(base_file, INCL) or {}
  R.cg.incl = annotate_inclusive(run_file, INCL)
  for k, v in pairs(R.cg.incl) do R.cg.incl[k] = v - (bincl[k] or 0) end
  R.cg.file = run_file
  if not r.clean then warn("callgrind run: " .. r.why) end
  note(fmt("callgrind: %s Ir per call (%d calls, %s Ir, startup %s Ir subtracted)", thousands(R.cg.per_call),
           calls, thousands(total), thousands(base_total)))

  -- the reference: SIPp's own UAS under callgrind, same load; it exits by
  -- itself after the calls (-m) or, for the run with no call, after 2 s
  local function cg_sipp(name, n)
    local outf = TMP .. "/" .. name .. ".callgrind"
    local port = free_port()
    local p = spawn(name, "valgrind --tool=callgrind --callgrind-out-file=" .. q(outf) ..
                    " sipp -nostdin -i 127.0.0.1 -p " .. port .. " -sn uas " .. SIPP_BUF ..
                    (n > 0 and (" -m " .. n) or " -timeout 2s"))
    local deadline = now() + 60
    while not in_use(port) do
      if rc_of(p) or now() > deadline then
        error("SIPp under callgrind did not start:\n" .. tail(p.out, 5), 0)
      end
      sleep(0.1)
    end
    local res
    if n > 0 then
      res = run_sipp_uac{ scen = "-sn uac", rate = rate, calls = n, port = port,
                          timeout = math.ceil(n / rate) + 30, limit = 200 }
    end
    if not wait_proc(p, 60) then
      kill(p)
      error("SIPp under callgrind did not stop:\n" .. tail(p.out, 5), 0)
    end
    return outf, res
  end
  local sbase = not SMOKE and cg_sipp("cg-sipp-idle", 0)
  local sfile, sres = cg_sipp("cg-sipp-calls", calls)
  local stotal = annotate(sfile)
  local sbt = sbase and annotate(sbase) or 0
  if stotal then
    R.cg.sipp = { per_call = (stotal - sbt) / calls, total = stotal, base = sbt, run = sres }
    note(fmt("callgrind: SIPp UAS %s Ir per call", thousands(R.cg.sipp.per_call)))
  end
end

local function render_callgrind()
  local cg = R.cg
  out("## 3. Instructions per call (callgrind)")
  out()
  if not cg.available then
    out("Not available: " .. tostring(cg.why) .. ".")
    out()
    return
  end
  out(fmt("%d calls at %d cps (SIPp `-sn uac`: %s) into the Lua UAS under `valgrind --tool=callgrind`, " ..
          "run by %s. " ..
          "%s The instructions of a run with no call (start-up, module loading, exit: %s Ir) are " ..
          "subtracted, per function.", cg.calls, cg.rate, cg.run.clean and "0 failed" or cg.run.why, cg.host,
          cg.drain and "The UAS stops once every transaction has ended (Timers J and L, 32 s), " ..
          "so their expiry is counted." or "(smoke: stopped before the transactions expired.)",
          thousands(cg.base)))
  out()
  out(fmt("**%s instructions per call** (total %s Ir).", thousands(cg.per_call), thousands(cg.total)))
  out()
  out("| share | Ir per call | % |")
  out("|---|---:|---:|")
  local net = cg.total - cg.base
  local groups = {}
  for _, c in ipairs(CATS) do
    local v = cg.cats[c[1]] or 0
    out(fmt("| %s | %s | %.1f%% |", c[2], thousands(v / cg.calls), 100 * v / net))
    groups[c[3]] = (groups[c[3]] or 0) + v
  end
  out()
  out(fmt("In four groups: parse %.0f%%, transaction/transport/dialog (our C) %.0f%%, " ..
          "Lua %.0f%%, libc/libev/libcrypto/other %.0f%%.", 100 * (groups.parse or 0) / net,
          100 * (groups.core or 0) / net, 100 * (groups.lua or 0) / net, 100 * (groups.other or 0) / net))
  if cg.sipp then
    out(fmt("**SIPp's own UAS, same load under callgrind: %s instructions per call** (its start-up, " ..
            "%s Ir, subtracted; SIPp `-sn uac`: %s).", thousands(cg.sipp.per_call), thousands(cg.sipp.base),
            cg.sipp.run and (cg.sipp.run.clean and "0 failed" or cg.sipp.run.why) or "?"))
    out()
  end
  local incl = cg.incl or {}
  out("Where a call's instructions go, inclusive (callees counted; the run with no call subtracted; " ..
      "the rows overlap):")
  out()
  out("| function | what | Ir per call | % |")
  out("|---|---|---:|---:|")
  for _, e in ipairs(INCL) do
    local v = incl[e[1]]
    if v then out(fmt("| %s | %s | %s | %.1f%% |", e[1], e[2], thousands(v / cg.calls), 100 * v / net)) end
  end
  out()
  out("Top functions (exclusive Ir per call):")
  out()
  out("| # | function | object | Ir per call | % |")
  out("|---:|---|---|---:|---:|")
  for i = 1, math.min(10, #cg.list) do
    local e = cg.list[i]
    out(fmt("| %d | %s | %s | %s | %.1f%% |", i, e.fn, e.obj, thousands(e.ir / cg.calls), 100 * e.ir / net))
  end
  out()
end

---------------------------------------------------------------------------
-- 4. Scaling: short calls versus 20 s calls at the same rate

local function steady(o)
  -- the server, SIPp's client; CPU and memory read over a window in which
  -- every stage of a call (arrivals, BYEs, transaction expiry) runs at the rate
  local server = o.start()
  sleep(0.3)
  local idle_rss = status_kb(server.pid, "VmRSS")
  local c = start_sipp_uac{ scen = "-sn uac", rate = o.rate, calls = math.floor(o.rate * (o.w1 + 5)),
                            port = server.port, limit = o.limit, duration = o.duration,
                            timeout = o.w1 + 60 }
  local t0 = c.t0
  local function at(t)
    local left = t0 + t - now()
    if left > 0 then sleep(left) end
  end
  at(o.w0)
  local s0, u0, ta, d0 = cpu_of(server.pid), cpu_of(c.pid), now(), udp_drops(server.port) or 0
  at(o.w1)
  local s1, u1, tb, d1 = cpu_of(server.pid), cpu_of(c.pid), now(), udp_drops(server.port) or 0
  local cd = udp_drops(c.lport) or 0
  local r = { rate = o.rate }
  r.hwm = status_kb(server.pid, "VmHWM")
  r.rss = status_kb(server.pid, "VmRSS")
  r.idle_rss = server.idle_rss or idle_rss
  r.stat = server.port and uas_stat(server) or {}
  kill(c)
  kill(server)
  if not (s0 and s1) then error(o.label .. ": the server died:\n" .. tail(server.out, 10), 0) end
  local rows = sipp_rows(c.csv)
  local csv = rows and rows[#rows]
  r.failed = csv_num(csv, "FailedCall(C)")
  r.concurrent = csv_num(csv, "CurrentCall")
  r.created = csv_num(csv, "TotalCallCreated")
  r.server_drops, r.client_drops = d1 - d0, cd
  r.window = tb - ta
  -- calls SIPp created in the window (its 1 s rows, interpolated), else rate x window
  local ca, cb = created_at(rows, ta - t0), created_at(rows, tb - t0)
  r.calls = ca and cb and cb > ca and (cb - ca) or o.rate * r.window
  r.achieved = r.calls / r.window
  r.server_per = (s1 - s0) / r.calls
  r.server_load = (s1 - s0) / r.window
  r.uac_load = u0 and u1 and (u1 - u0) / r.window or nil
  r.clean = r.failed == 0 and u1 ~= nil
  note(fmt("%-26s window %.0f-%.0f s: %.0f cps, %s us/call (%s CPU), %d concurrent, %d failed, " ..
           "SIPp %s CPU, HWM %s kB, drops %d/%d", o.label, o.w0, o.w1, r.achieved, us(r.server_per),
           pct(r.server_load), r.concurrent, r.failed, r.uac_load and pct(r.uac_load) or "?", tostring(r.hwm),
           r.server_drops, r.client_drops))
  return r
end

local function section_scaling()
  note("4. scaling: 1000 cps with short calls, then with 20 s calls")
  local rate = SMOKE and 50 or 1000
  local dur = SMOKE and 1000 or 20000
  local long_limit = math.floor(rate * dur / 1000 * 1.5) + 1000
  -- Lua: the window starts after the first transactions expired (32 s) and,
  -- with long calls, after the first BYEs' transactions did (20 + 32 s)
  local lw = SMOKE and { 0.6, 1.4, 1.2, 2 } or { 34, 41, 54, 61 }
  local sw = SMOKE and { 0.6, 1.4, 1.2, 2 } or { 5, 12, 26, 33 }
  R.scale = {}
  R.scale.lua_short = steady{ label = "Lua UAS short calls", start = start_lua_uas, rate = rate,
                              w0 = lw[1], w1 = lw[2] }
  R.scale.lua_long = steady{ label = "Lua UAS 20 s calls", start = start_lua_uas, rate = rate, w0 = lw[3],
                             w1 = lw[4], duration = dur, limit = long_limit }
  local function sipp() return start_sipp_uas("-sn uas") end
  R.scale.sipp_short = steady{ label = "SIPp UAS short calls", start = sipp, rate = rate, w0 = sw[1],
                               w1 = sw[2] }
  R.scale.sipp_long = steady{ label = "SIPp UAS 20 s calls", start = sipp, rate = rate, w0 = sw[3],
                              w1 = sw[4], duration = dur, limit = long_limit }
  R.scale.rate, R.scale.dur = rate, dur
end

-- peak RSS per concurrent call of the Lua UAS with long calls (the
-- targets table is written before section 4, so both compute it)
local function lua_rss_per_call(s)
  local ll = s and s.lua_long
  return ll and ll.hwm and ll.idle_rss and ll.concurrent > 0 and (ll.hwm - ll.idle_rss) / ll.concurrent or nil
end

local function render_scaling()
  local s = R.scale
  out("## 4. Scaling: short calls versus 20 s calls, same rate")
  out()
  out(fmt("SIPp `-sn uac` at %d cps, calls of 0 s then of %d s (`-d %d`). CPU per call is read over a " ..
          "window in which every stage runs at the rate: for the Lua UAS after the first transactions " ..
          "expired (Timers J/L, 32 s; with long calls 20 + 32 s), for SIPp's UAS after its own 4 s " ..
          "timewait. " ..
          "Peak RSS per concurrent call: (VmHWM - idle VmRSS) / concurrent calls.",
          s.rate, s.dur // 1000, s.dur))
  out()
  out("| | rate in window | concurrent calls | server CPU/call (us) | server CPU | SIPp uac CPU | failed " ..
      "| drops | VmHWM (kB) | idle RSS (kB) | transactions | Lua heap (kB) |")
  out("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  local function row(name, r)
    out(fmt("| %s | %.0f | %d | %s | %s | %s | %d | %d / %d | %s | %s | %s | %s |", name, r.achieved,
            r.concurrent, us(r.server_per), pct(r.server_load), r.uac_load and pct(r.uac_load) or "-",
            r.failed, r.server_drops, r.client_drops, tostring(r.hwm or "-"), tostring(r.idle_rss or "-"),
            r.stat.txns and tostring(r.stat.txns) or "-", r.stat.mem_kb and tostring(r.stat.mem_kb) or "-"))
  end
  row("Lua UAS, short calls", s.lua_short)
  row(fmt("Lua UAS, %d s calls", s.dur // 1000), s.lua_long)
  row("SIPp UAS, short calls", s.sipp_short)
  row(fmt("SIPp UAS, %d s calls", s.dur // 1000), s.sipp_long)
  out()
  local ls, ll = s.lua_short, s.lua_long
  out(fmt("**Lua UAS: CPU per call with %d concurrent calls / with short calls = %.2f** (target <= 1.3); " ..
          "SIPp UAS: %.2f.", ll.concurrent, ll.server_per / ls.server_per,
          s.sipp_long.server_per / s.sipp_short.server_per))
  if ll.server_drops > 0 then
    out(fmt("In the long-call window the Lua UAS's socket dropped %d datagrams while it used %s of a core " ..
            "on average: its loop stalls now and then for longer than its receive buffer lasts " ..
            "(with this many coroutines, the Lua collector's sweep and the frees it makes are the " ..
            "usual cause; SIPp's UAS dropped %d).", ll.server_drops, pct(ll.server_load),
            s.sipp_long.server_drops))
  end
  local per = lua_rss_per_call(s)
  local per2 = ll.hwm and ls.hwm and ll.concurrent > ls.concurrent and
               (ll.hwm - ls.hwm) / (ll.concurrent - ls.concurrent)
  local sp = s.sipp_long.hwm and s.sipp_long.concurrent > 0 and s.sipp_long.idle_rss and
             (s.sipp_long.hwm - s.sipp_long.idle_rss) / s.sipp_long.concurrent
  out(fmt("**Peak RSS per concurrent call: Lua UAS %s KiB** (target <= 8; this includes the call's " ..
          "share of " ..
          "the live transactions); over the short-call run's peak, %s KiB per extra established call; " ..
          "SIPp UAS %s KiB.", per and fmt("%.1f", per) or "-", per2 and fmt("%.1f", per2) or "-",
          sp and fmt("%.1f", sp) or "-"))
  local lh = ll.stat.mem_kb and ls.stat.mem_kb and ll.concurrent > ls.concurrent and
             (ll.stat.mem_kb - ls.stat.mem_kb) / (ll.concurrent - ls.concurrent)
  if lh then
    out(fmt("Of which the Lua heap (collectgarbage(\"count\") in the UAS): %.1f KiB per established " ..
            "call.", lh))
  end
  for _, r in ipairs{ ls, ll } do
    if r.uac_load and r.uac_load > 0.85 then
      out(fmt("SIPp's client used %s of a core during the %s run: it is the ceiling there.", pct(r.uac_load),
              r == ls and "short-call" or "long-call"))
    end
  end
  out()
end

---------------------------------------------------------------------------
-- 5. Non-INVITE: OPTIONS and REGISTER with digest

local function section_non_invite()
  note("5. non-INVITE: OPTIONS served, REGISTER with digest")
  local orates = SMOKE and { 50 } or { 2000, 5000, 10000, 15000, 20000, 25000, 30000, 40000 }
  local opt_uac = "-sf " .. q(ROOT .. "/bench/options_uac.xml")
  R.opt_core, R.opt_lua, R.opt_sipp = ladders{
    { label = "OPTIONS, Lua UAS (core)", rates = orates, scen = opt_uac, unit = "req",
      server = function() return start_lua_uas() end },
    { label = "OPTIONS, Lua UAS (handler)", rates = orates, scen = opt_uac, unit = "req",
      server = function() return start_lua_uas{ args = "--options-handler" } end },
    { label = "OPTIONS, SIPp", rates = orates, scen = opt_uac, unit = "req",
      server = function()
        return start_sipp_uas("-sf " .. q(ROOT .. "/bench/options_uas.xml"), "sipp-options")
      end } }
  local rrates = SMOKE and { 20 } or { 500, 1000, 2000, 3000, 4000, 6000, 8000, 10000, 12000 }
  local reg_uac = "-sf " .. q(ROOT .. "/bench/register_uac.xml")
  -- is req:authenticate there? the UAS says so when it starts
  local probe = start_lua_uas()
  local auth = probe.auth
  kill(probe)
  R.reg_auth = auth
  local reg_sipp = { label = "REGISTER digest, SIPp", rates = rrates, scen = reg_uac, unit = "reg",
                     server = function()
                       return start_sipp_uas("-sf " .. q(ROOT .. "/bench/register_uas.xml"), "sipp-register")
                     end }
  if auth then
    R.reg_lua, R.reg_sipp = ladders{
      { label = "REGISTER digest, Lua UAS", rates = rrates, scen = reg_uac, unit = "reg",
        server = function() return start_lua_uas() end }, reg_sipp }
  else
    note("REGISTER digest, Lua UAS: not available (no req:authenticate in this build)")
    R.reg_sipp = ladders{ reg_sipp }
  end
end

local function render_non_invite()
  out("## 5. Non-INVITE requests")
  out()
  out(fmt("OPTIONS: SIPp with bench/options_uac.xml (one OPTIONS, its 200) at rising rates, %g s a step, " ..
          "against the Lua UAS with no OPTIONS handler (the C core answers), with a Lua handler " ..
          "(`ua:on(\"OPTIONS\", function() return 200 end)`), and SIPp with bench/options_uas.xml. " ..
          "REGISTER: bench/register_uac.xml (REGISTER, 401, REGISTER with digest, 200) against " ..
          "`req:authenticate` in the Lua UAS and SIPp's bench/register_uas.xml (verifyauth). " ..
          "CPU per request: server CPU over the step / requests (a REGISTER counts once, both " ..
          "transactions in it).", STEP))
  out()
  local function side_table(cols, unit)
    local head = {}
    for _, c in ipairs(cols) do head[#head + 1] = c[1] .. " | CPU/" .. unit .. " (us) | CPU | drops" end
    out("| rate (/s) | " .. table.concat(head, " | ") .. " |")
    out("|---:" .. string.rep("|---|---:|---:|---:", #cols) .. "|")
    local rates, seen = {}, {}
    for _, c in ipairs(cols) do
      for _, st in ipairs(c[2].steps) do
        if not seen[st.rate] then seen[st.rate] = true; rates[#rates + 1] = st.rate end
      end
    end
    table.sort(rates)
    for _, rate in ipairs(rates) do
      local cells = {}
      for _, c in ipairs(cols) do
        local a, b, d, e = cell(step_at(c[2], rate))
        if c[2].na then a = "not available" end
        cells[#cells + 1] = table.concat({ a, b, d, e }, " | ")
      end
      out(fmt("| %d | %s |", rate, table.concat(cells, " | ")))
    end
    out()
  end
  side_table({ { "OPTIONS, C core answers", R.opt_core }, { "OPTIONS, Lua handler", R.opt_lua },
               { "OPTIONS, SIPp", R.opt_sipp } }, "req")
  out(fmt("**OPTIONS per second with 0 failed: C core %s, Lua handler %s, SIPp %s.**",
          best_of(R.opt_core), best_of(R.opt_lua), best_of(R.opt_sipp)))
  out()
  side_table({ { "REGISTER digest, Lua UAS", R.reg_lua or { steps = {}, na = true } },
               { "REGISTER digest, SIPp", R.reg_sipp } }, "reg")
  out(fmt("**REGISTERs with digest per second with 0 failed: Lua UAS %s, SIPp %s.**",
          R.reg_lua and best_of(R.reg_lua) or
          "not available (req:authenticate does not exist in this build)",
          best_of(R.reg_sipp)))
  out()
end

---------------------------------------------------------------------------
-- 6. Media: concurrent calls each playing a WAV in a loop, luasip's media
-- engine against SIPp's rtp_stream, raised until pacing breaks

local MEDIA_WINDOW = SMOKE and 1.5 or 10   -- seconds measured a step
local MEDIA_SETTLE = SMOKE and 0.5 or 2    -- seconds between the last call and the window
local MEDIA_WAV_SECS = 4                   -- the prompt: it loops every 4 s
local MEDIA_LONG_SECS = 60                 -- the prompt of the allocation check: never loops in it
local MEDIA_PORTS = "30000-39999"          -- luasip's media.ports: 5000 RTP/RTCP pairs
local MEDIA_MALLOC_STREAMS = SMOKE and 20 or 1000
local MEDIA_FLOOR_STREAMS = SMOKE and 20 or 1000
local MEDIA_PACER = false                  -- bench/media_pacer.c built
local MEDIA_NAMES = { lua = "luasip", sipp = "SIPp", sleep = "floor/sleep", ev = "floor/ev" }

-- the steps: --media-steps overrides (a short list while developing)
local function media_steps()
  if MEDIA_STEPS_ARG then
    local t = {}
    for n in MEDIA_STEPS_ARG:gmatch("%d+") do t[#t + 1] = tonumber(n) end
    return t
  end
  return SMOKE and { 20 } or { 100, 250, 500, 1000, 1500, 2000, 3000 }
end

-- the server on one core, the caller and the receiver on the other (when
-- there are two and taskset is there): "streams on one core" literally,
-- and the same for both servers
local NPROC = tonumber(sh("nproc")) or 1
local PIN = NPROC >= 2 and have("taskset")
local PIN_SERVER = PIN and "taskset -c 1 " or ""
local PIN_LOAD = PIN and "taskset -c 0 " or ""

-- a port p with p .. p + n - 1 all free (SIPp's -mp takes p and p + 2)
local function free_ports(n)
  for _ = 1, 200 do
    local p = free_port()
    if p % 2 == 0 and p + n < 60000 then
      local ok = true
      for k = 1, n - 1 do
        if handed[p + k] or in_use(p + k) then ok = false break end
      end
      if ok then
        for k = 1, n - 1 do handed[p + k] = true end
        return p
      end
    end
  end
  error("no free port range")
end

-- the receiver, the allocation counter and the prompts; nil and why when
-- something is missing
local function media_tools()
  if not have("cc") then return nil, "no C compiler" end
  if not have("sox") then return nil, "no sox (make deps)" end
  local log = q(TMP .. "/media-cc.log")
  if os.execute(fmt("cc -O2 -Wall -o %s %s >%s 2>&1", q(TMP .. "/media_rx"), q(ROOT .. "/bench/media_rx.c"),
                    log)) ~= true then
    return nil, "bench/media_rx.c did not build: " .. tail(TMP .. "/media-cc.log", 3)
  end
  if os.execute(fmt("cc -O2 -Wall -shared -fPIC -o %s %s >>%s 2>&1", q(TMP .. "/media_malloc.so"),
                    q(ROOT .. "/bench/media_malloc.c"), log)) ~= true then
    return nil, "bench/media_malloc.c did not build: " .. tail(TMP .. "/media-cc.log", 3)
  end
  -- the floor (optional: without libev's headers, no floor rows)
  MEDIA_PACER = os.execute(fmt("cc -O2 -Wall -o %s %s -lev >>%s 2>&1", q(TMP .. "/media_pacer"),
                               q(ROOT .. "/bench/media_pacer.c"), log)) == true
  -- the same audio for both: a sweep as 16-bit PCM WAV at 8 kHz for
  -- luasip (what a prompt usually is), as raw mu-law for rtp_stream (which
  -- sends a file's bytes as they are)
  local function make(name, secs)
    local wav = TMP .. "/" .. name .. ".wav"
    local ok = os.execute(fmt("sox -n -r 8000 -c 1 -b 16 %s synth %d sine 300-3000 vol 0.5 >/dev/null 2>&1 && " ..
                              "sox %s -t raw -e mu-law -b 8 -r 8000 -c 1 %s >/dev/null 2>&1", q(wav), secs,
                              q(wav), q(TMP .. "/" .. name .. ".ulaw")))
    return ok == true
  end
  if not make("media", MEDIA_WAV_SECS) or not make("media-long", MEDIA_LONG_SECS) then
    return nil, "sox could not make the prompts"
  end
  return true
end

-- busy and total jiffies of one CPU so far (/proc/stat)
local function cpu_jiffies(cpu)
  local line = (readfile("/proc/stat") or ""):match("\ncpu" .. cpu .. " ([^\n]*)")
  if not line then return nil end
  local f = {}
  for w in line:gmatch("%d+") do f[#f + 1] = tonumber(w) end
  local total = 0
  for i = 1, math.min(8, #f) do total = total + f[i] end   -- user .. steal
  return total - f[4] - (f[5] or 0), total                 -- less idle and iowait
end

-- allocations, frees and bytes so far in a process run with the counter
local function malloc_counts(path)
  local s = readfile(path)
  if not s or #s < 32 then return nil end
  local a, f, b, on = string.unpack("<I8I8I8I8", s)
  if on ~= 1 then return nil end
  return { allocs = a, frees = f, bytes = b }
end

local function start_media_rx()
  local port = free_ports(2)
  local p = spawn("media-rx", PIN_LOAD .. q(TMP .. "/media_rx") .. " " .. port)
  p.port = port
  local deadline = now() + 5
  while not (readfile(p.out) or ""):match("READY") do
    if rc_of(p) or now() > deadline then
      error("bench/media_rx did not start:\n" .. tail(p.out, 5), 0)
    end
    sleep(0.05)
  end
  return p
end

-- the RESULT line the receiver printed after the nth window closed
local function media_rx_result(p, nth, timeout)
  local deadline = now() + timeout
  while true do
    local s, k = readfile(p.out) or "", 0
    for line in s:gmatch("RESULT [^\n]*\n") do
      k = k + 1
      if k == nth then
        local r = {}
        for key, v in line:gmatch("([%w_]+)=(%S+)") do r[key] = tonumber(v) or v end
        return r
      end
    end
    if rc_of(p) or now() > deadline then
      error("bench/media_rx gave no result:\n" .. tail(p.out, 5), 0)
    end
    sleep(0.05)
  end
end

local function start_media_server(side, wav)
  local port = free_port()
  local counter = fmt("%s/malloc-%s-%d", TMP, side, port)
  local env = "MALLOC_COUNT_FILE=" .. q(counter) .. " LD_PRELOAD=" .. q(TMP .. "/media_malloc.so") .. " "
  local p
  if side == "lua" then
    p = spawn("lua-media-uas", env .. PIN_SERVER .. q(LUASIP) .. " " .. q(ROOT .. "/bench/media_uas.lua") ..
              " " .. port .. " " .. q(TMP .. "/" .. wav .. ".wav") .. " --ports " .. MEDIA_PORTS ..
              " --parent " .. SELF_PID)
    local deadline = now() + 10
    while not (readfile(p.out) or ""):match("READY") do
      if rc_of(p) or now() > deadline then
        error("bench/media_uas.lua did not start:\n" .. tail(p.out, 10), 0)
      end
      sleep(0.05)
    end
  else
    -- rtp_stream plays media.ulaw from the directory SIPp runs in (TMP);
    -- the scenario names media.ulaw, so the long prompt is copied over it
    if wav ~= "media" then
      os.execute("cp " .. q(TMP .. "/" .. wav .. ".ulaw") .. " " .. q(TMP .. "/media.ulaw"))
    end
    local mport = free_ports(4)
    p = spawn("sipp-media-uas", env .. PIN_SERVER .. "sipp -nostdin -i 127.0.0.1 -p " .. port ..
              " -mi 127.0.0.1 -mp " .. mport .. " -sf " .. q(ROOT .. "/bench/media_uas.xml") ..
              " -timeout 600 " .. SIPP_BUF)
    sleep(0.4)
    if rc_of(p) then error("SIPp media UAS did not start:\n" .. tail(p.out, 10), 0) end
  end
  p.port, p.counter = port, counter
  return p
end

-- one step: n calls into a fresh server of one side, each playing the
-- prompt; a window of MEDIA_WINDOW s once they all play
local function media_start(side, n, wav, idle_first)
  if side == "sleep" or side == "ev" then
    -- the floor: bench/media_pacer.c, no SIP, no caller
    local rx = start_media_rx()
    local server = spawn("media-pacer-" .. side, PIN_SERVER .. q(TMP .. "/media_pacer") .. " " .. rx.port .. " " ..
                         n .. " " .. side)
    sleep(MEDIA_SETTLE)
    return server, rx, nil, { side = side, n = n }
  end
  local server = start_media_server(side, wav or "media")
  local idle
  if idle_first then
    -- the same window with no call: what the server allocates by itself
    -- (once its start-up is over)
    sleep(SMOKE and 1 or 2)
    local a = malloc_counts(server.counter)
    sleep(MEDIA_WINDOW)
    local b = malloc_counts(server.counter)
    idle = a and b and b.allocs - a.allocs
  end
  local rx = start_media_rx()
  local rate = math.min(500, math.max(20, n // 4))
  local ramp = n / rate
  local hold = ramp + MEDIA_SETTLE + MEDIA_WINDOW + 10
  local lport, mport = free_port(), free_ports(4)
  local uac = spawn("sipp-media-uac", PIN_LOAD .. table.concat({
    "sipp -nostdin -i 127.0.0.1 -p", lport, "-mi 127.0.0.1 -mp", mport,
    "-sf", q(ROOT .. "/bench/media_uac.xml"), "-key rx_port", rx.port, SIPP_BUF,
    "-r", rate, "-rp 1000", "-m", n, "-l", n, "-d", math.floor(hold * 1000),
    "-timeout", fmt("%ds", math.ceil(hold + 30)), "127.0.0.1:" .. server.port }, " "))
  sleep(ramp + MEDIA_SETTLE)
  return server, rx, uac, { side = side, n = n, rate = rate, idle_allocs = idle }
end

-- one try of a step: n streams from a fresh sender of one side (luasip
-- or SIPp playing the prompt to n calls, or the floor); a window of
-- MEDIA_WINDOW s once they all play
local function media_try(side, n, wav, idle_first)
  local server, rx, uac, r = media_start(side, n, wav, idle_first)
  local c0, s0 = cpu_of(server.pid)
  local u0, x0 = cpu_of(uac and uac.pid), cpu_of(rx.pid)
  local m0 = server.counter and malloc_counts(server.counter)
  local b0, j0 = cpu_jiffies(PIN and 1 or 0)
  local t0 = now()
  os.execute("kill -USR1 " .. rx.pid)
  sleep(MEDIA_WINDOW)
  os.execute("kill -USR2 " .. rx.pid)
  local t1 = now()
  local c1, s1 = cpu_of(server.pid)
  local u1, x1 = cpu_of(uac and uac.pid), cpu_of(rx.pid)
  local m1 = server.counter and malloc_counts(server.counter)
  local b1, j1 = cpu_jiffies(PIN and 1 or 0)
  local alive_server = c1 ~= nil
  r.rx = media_rx_result(rx, 1, 10)
  r.stat = side == "lua" and uas_stat(server) or {}
  if uac then kill(uac) end
  kill(server)
  kill(rx)
  if not alive_server then
    error(fmt("the %s media server died during the %d-stream step:\n%s", side, n, tail(server.out, 10)), 0)
  end
  local wall = t1 - t0
  r.wall = wall
  r.server_cpu = c1 - c0
  r.server_load = r.server_cpu / wall
  r.sys_share = r.server_cpu > 0 and (s1 - s0) / r.server_cpu or nil
  -- what else ran on the server's core (other people's work): its busy
  -- share less the server's own
  r.others = b0 and b1 and j1 > j0 and math.max(0, (b1 - b0) / (j1 - j0) - r.server_load) or nil
  r.uac_load = u0 and u1 and (u1 - u0) / wall
  r.rx_load = x0 and x1 and (x1 - x0) / wall
  r.streams = r.rx.streams or 0
  r.per_stream = r.streams > 0 and r.server_cpu / (r.streams * r.rx.window) or nil   -- s of CPU per s of audio
  if m0 and m1 then
    r.allocs = m1.allocs - m0.allocs
    r.alloc_bytes = m1.bytes - m0.bytes
    r.per_packet = (r.rx.packets or 0) > 0 and r.allocs / r.rx.packets or nil
  end
  -- packets a stream sent per second, from the mean interval: 50 when the
  -- server keeps time (one that falls behind and skips ahead loses no
  -- sequence number, its streams just run slow)
  r.pps = (r.rx.mean_us or 0) > 0 and 1e6 / r.rx.mean_us or 0
  local p99 = r.rx.p99_us or 0
  r.paced = p99 >= 18000 and p99 <= 22000 and r.pps >= 49.5
  r.complete = r.streams >= n
  r.clean = r.complete and (r.rx.lost or 0) == 0 and r.paced
  r.why = (not r.complete and fmt("%d of %d streams", r.streams, n)) or
          ((r.rx.lost or 0) > 0 and fmt("%d lost", r.rx.lost)) or
          (r.pps < 49.5 and fmt("%.1f packets/s", r.pps)) or
          (not r.paced and fmt("p99 %.1f ms", p99 / 1000)) or "ok"
  note(fmt("%-8s %5d streams: %-16s CPU %s (%s sys, %s us/stream/s), interval p50 %.1f p99 %.1f max %.1f ms, " ..
           "%.2f packets/s, lost %d, rx drops %d, allocs/packet %s; caller %s, receiver %s, others on its core %s",
           MEDIA_NAMES[side], n, r.why, pct(r.server_load), r.sys_share and pct(r.sys_share) or "?",
           us(r.per_stream), (r.rx.p50_us or 0) / 1000, p99 / 1000, (r.rx.max_us or 0) / 1000, r.pps,
           r.rx.lost or 0, r.rx.drops or 0,
           r.per_packet and fmt("%.4f", r.per_packet) or "-", r.uac_load and pct(r.uac_load) or "?",
           r.rx_load and pct(r.rx_load) or "?", r.others and pct(r.others) or "?"))
  return r
end

-- a step; when other processes took more than a quarter of the server's
-- core during its window (the machine is shared), it runs again, twice at
-- most, and the try with the least of them is kept
local MEDIA_OTHERS_MAX = 0.25
local function media_step(side, n, wav, idle_first)
  local best
  for try = 1, SMOKE and 1 or 3 do
    local r = media_try(side, n, wav, idle_first)
    r.tries = try
    if not best or (r.others or 0) < (best.others or 0) then best = r end
    if (r.others or 0) <= MEDIA_OTHERS_MAX then break end
    if try < 3 and not SMOKE then
      note(fmt("other processes took %s of the server's core: again", pct(r.others)))
    end
  end
  return best
end

local function section_media()
  note("6. media: concurrent calls each playing a WAV in a loop, luasip against SIPp's rtp_stream")
  if not have("sipp") then
    R.media = { na = "SIPp is not installed" }
    return
  end
  local ok, why = media_tools()
  if not ok then
    note("media: not available (" .. why .. ")")
    R.media = { na = why }
    return
  end
  local steps = media_steps()
  local res = { lua = { steps = {} }, sipp = { steps = {} }, list = steps }
  -- a ladder stops at its first step that lost packets, did not get all
  -- its streams up, or saturated its core; a p99 outside 20 +- 2 ms is
  -- reported, not a stop (this machine's own floor is outside it at 1,000
  -- streams, and CPU per stream is compared at every count)
  local function broken(_, r)
    return not r.complete or (r.rx.lost or 0) > 0 or r.server_load >= 0.95
  end
  for _, n in ipairs(steps) do
    for _, side in ipairs{ "lua", "sipp" } do
      local l = res[side]
      if not l.stopped then
        local r = media_step(side, n)
        l.steps[#l.steps + 1] = r
        if r.clean then l.best = r end
        if broken(l, r) then l.stopped = true end
      end
    end
  end
  -- allocations on the send path: a prompt that does not reach its end
  -- during the window, so no stream reopens its file (which allocates)
  note(fmt("media: allocations with %d streams of a %d s prompt (no stream loops in the window)",
           MEDIA_MALLOC_STREAMS, MEDIA_LONG_SECS))
  res.long = media_step("lua", MEDIA_MALLOC_STREAMS, "media-long", true)
  -- the floor: the same count of streams from bench/media_pacer.c
  if MEDIA_PACER then
    note(fmt("media: the floor, %d streams from bench/media_pacer.c", MEDIA_FLOOR_STREAMS))
    res.floor = { media_step("sleep", MEDIA_FLOOR_STREAMS), media_step("ev", MEDIA_FLOOR_STREAMS) }
  end
  R.media = res
end

local function ms(x) return x and fmt("%.1f", x / 1000) or "-" end

local function render_media(M0, load_end)
  local m = R.media
  out("## 6. Media: concurrent calls playing a prompt, luasip against SIPp's rtp_stream")
  out()
  out(fmt("Measured at commit %s%s, %s, load average %s at the start of the run and %s at the end.", M0.commit,
          M0.dirty and " (with uncommitted changes)" or "", M0.date, M0.load, load_end))
  out()
  if not m or m.na then
    out("Not available: " .. tostring(m and m.na or "the section did not run") .. ".")
    out()
    return
  end
  out(fmt("Each step: a fresh server, SIPp's bench/media_uac.xml places N calls (at N/4 per second, at most " ..
          "500) offering PCMU, holds them and sends no RTP (no `-rtp_echo`). The luasip server is " ..
          "bench/media_uas.lua: a UA with `media = { addr, ports = \"%s\", codecs }` that answers and " ..
          "runs `call:play(prompt, { loop = true })`, the prompt a %d s 16-bit 8 kHz WAV (a sweep), " ..
          "which the engine decodes once and every stream sends from (files up to 60 s are shared that " ..
          "way, %d s of it here; longer ones stream from disk). SIPp's server is bench/media_uas.xml: `<exec " ..
          "rtp_stream=\"media.ulaw,-1,0\"/>` on the ACK, the same sweep as raw mu-law (rtp_stream sends " ..
          "a file's bytes as they are, from memory; SIPp 3.6 skips no WAV header), from threads of 20 " ..
          "calls each (its default `-rtp_threadtasks`). %g s after the last call was placed, a " ..
          "window of %g s: the server's CPU is utime+stime from /proc over it; CPU per stream is that " ..
          "over streams x seconds, in microseconds of CPU per second of audio (50 packets).",
          MEDIA_PORTS, MEDIA_WAV_SECS, MEDIA_WAV_SECS, MEDIA_SETTLE, MEDIA_WINDOW))
  out()
  out("The receiver is bench/media_rx.c (built by the run): one UDP socket on the port every call " ..
      "offers, streams told apart by SSRC and source address, recvmmsg in batches. Times are the " ..
      "kernel's receive timestamps (SO_TIMESTAMPNS): on loopback the packet is queued to the " ..
      "receiver's socket inside the sender's sendto(), so an interval is the sender's pacing, not the " ..
      "receiver's scheduling; its 32 MiB socket buffer absorbs the receiver's own delays, and the " ..
      "drops it still had (SO_RXQ_OVFL) are counted apart (\"rx drops\"). Interval: between two " ..
      "consecutive packets of a stream, all streams pooled, 10 us bins; lost: sequence numbers " ..
      "missing between a stream's first and last packet in the window. Capturing with tshark on lo " ..
      "was not used: at 50,000-150,000 packets a second dumpcap drops packets and takes a core.")
  out()
  out(fmt("The machine has %d cores: %s The caller (SIPp, idle once its calls are up) and the receiver " ..
          "compete for the other core, and the loopback receive path (UDP queueing and the timestamp) " ..
          "runs in the sender's system call, so it is part of the server's CPU on both sides; other " ..
          "people's work on the machine is not pinned: \"others on the server's core\" is that core's busy " ..
          "share over the window (/proc/stat) less the server's own; a step where they took more than a " ..
          "quarter of it runs again, twice at most, and the try with the least is kept. A ladder stops " ..
          "at its first step that lost packets, did not get all its streams up or used 95%% of its " ..
          "core.", NPROC,
          PIN and "the server is pinned to CPU 1 and the caller and the receiver to CPU 0 (taskset), so " ..
          "\"streams on one core\" is what the server does with one core." or
          "nothing is pinned (no taskset or a single core)."))
  out()
  local side = "| CPU/stream (us/s) | CPU (sys) | interval p50 / p99 / max (ms) | outside 20 +- 2 ms " ..
               "| packets/s a stream | lost / rx drops "
  out("| streams | luasip " .. side .. "| SIPp rtp_stream " .. side ..
      "| caller / receiver / others on the server's core (luasip ; SIPp) |")
  out("|---:" .. string.rep("|---|---:|---:|---:|---:|---:|---:", 2) .. "|---:|")
  local function at(l, n)
    for _, s in ipairs(l.steps) do if s.n == n then return s end end
  end
  local function cells(s)
    if not s then return "- | - | - | - | - | - | -" end
    local x = s.rx
    local outside = (x.intervals or 0) > 0 and fmt("%.2f%%", 100 * x.out2ms / x.intervals) or "-"
    return table.concat({ s.clean and "paced" or s.why, us(s.per_stream),
                          pct(s.server_load) .. (s.sys_share and (" (" .. pct(s.sys_share) .. ")") or ""),
                          fmt("%s / %s / %s", ms(x.p50_us), ms(x.p99_us), ms(x.max_us)), outside,
                          fmt("%.2f", s.pps), fmt("%d / %d", x.lost or 0, x.drops or 0) }, " | ")
  end
  local function loads(s)
    if not s then return "-" end
    return (s.uac_load and pct(s.uac_load) or "?") .. " / " .. (s.rx_load and pct(s.rx_load) or "?") ..
           " / " .. (s.others and pct(s.others) or "?")
  end
  for _, n in ipairs(m.list) do
    local a, b = at(m.lua, n), at(m.sipp, n)
    if a or b then
      out(fmt("| %d | %s | %s | %s ; %s |", n, cells(a), cells(b), loads(a), loads(b)))
    end
  end
  out()
  local function best(l)
    if not l.best then return "none" end
    local top = m.list[#m.list]
    return (l.best.n == top and "≥ " or "") .. l.best.n
  end
  out(fmt("**Most concurrent playing streams with p99 interval within 20 +- 2 ms and no loss: luasip %s, " ..
          "SIPp rtp_stream %s.**", best(m.lua), best(m.sipp)))
  -- CPU per stream at the highest count both ran with all their streams
  local common
  for _, n in ipairs(m.list) do
    local a, b = at(m.lua, n), at(m.sipp, n)
    if a and b and a.complete and b.complete then common = n end
  end
  R.media_common = common
  if common then
    local a, b = at(m.lua, common), at(m.sipp, common)
    out(fmt("**CPU per stream at %d streams: luasip %s us/s, SIPp rtp_stream %s us/s (ratio %s).**", common,
            us(a.per_stream), us(b.per_stream),
            (b.per_stream or 0) > 0 and fmt("%.2f", a.per_stream / b.per_stream) or "-"))
  end
  out()
  if m.floor then
    local fl = m.floor[1].n
    out(fmt("The floor, at %d streams: bench/media_pacer.c sends the same packets (172 bytes, PCMU) from a " ..
            "UDP socket a stream, as luasip does, all in one burst every 20 ms and nothing else (no file, no " ..
            "codec, no SIP), pinned and measured as the servers are: with `clock_nanosleep` to absolute " ..
            "deadlines, then with a libev timer repeating every 20 ms as luasip's engine has. Its CPU is " ..
            "what the system calls cost; its intervals, what this machine's scheduling allows a " ..
            "single-threaded burst sender (libev waits in whole milliseconds: epoll_wait's timeout).", fl))
    out()
    out("| sender | result | CPU/stream (us/s) | CPU (sys) | interval p50 / p99 / max (ms) | outside 20 +- 2 ms " ..
        "| packets/s a stream | lost / rx drops |")
    out("|---|---|---:|---:|---:|---:|---:|---:|")
    out("| media_pacer, clock_nanosleep | " .. cells(m.floor[1]) .. " |")
    out("| media_pacer, libev timer | " .. cells(m.floor[2]) .. " |")
    if at(m.lua, fl) then out("| luasip (above) | " .. cells(at(m.lua, fl)) .. " |") end
    if m.long and m.long.n == fl then
      out(fmt("| luasip, %d s prompt (no reopen) | ", MEDIA_LONG_SECS) .. cells(m.long) .. " |")
    end
    if at(m.sipp, fl) then out("| SIPp rtp_stream (above) | " .. cells(at(m.sipp, fl)) .. " |") end
    out()
  end
  out("Allocations in the server during the window, counted by bench/media_malloc.c (an LD_PRELOAD " ..
      "counter of malloc, calloc, realloc, the aligned allocators; both servers run with it), " ..
      "against the packets the receiver got in that window:")
  out()
  out("| run | streams | packets | luasip allocations | per packet | bytes | SIPp allocations | per packet |")
  out("|---|---:|---:|---:|---:|---:|---:|---:|")
  for _, n in ipairs(m.list) do
    local a, b = at(m.lua, n), at(m.sipp, n)
    if a or b then
      out(fmt("| %d s prompt, looping | %d | %s | %s | %s | %s | %s | %s |", MEDIA_WAV_SECS, n,
              a and thousands(a.rx.packets or 0) or "-", a and a.allocs and thousands(a.allocs) or "-",
              a and a.per_packet and fmt("%.4f", a.per_packet) or "-",
              a and a.alloc_bytes and thousands(a.alloc_bytes) or "-",
              b and b.allocs and thousands(b.allocs) or "-", b and b.per_packet and fmt("%.4f", b.per_packet) or "-"))
    end
  end
  local lg = m.long
  if lg then
    out(fmt("| %d s prompt, no stream at its end | %d | %s | %s | %s | %s | - | - |", MEDIA_LONG_SECS, lg.n,
            thousands(lg.rx.packets or 0), lg.allocs and thousands(lg.allocs) or "-",
            lg.per_packet and fmt("%.6f", lg.per_packet) or "-", lg.alloc_bytes and thousands(lg.alloc_bytes) or "-"))
    if lg.idle_allocs then
      out(fmt("| same server, no call | 0 | 0 | %s | - | - | - | - |", thousands(lg.idle_allocs)))
    end
  end
  out()
  -- allocations a reopen costs: a looping run's allocations, less what
  -- the server allocates idle, over the reopens the window held (streams
  -- x window / prompt length)
  local per_reopen
  do
    local a = m.lua.steps[#m.lua.steps]
    if a and a.allocs and a.streams > 0 then
      per_reopen = (a.allocs - (lg and lg.idle_allocs or 0)) / (a.streams * a.rx.window / MEDIA_WAV_SECS)
    end
  end
  local extra = lg and lg.allocs and lg.allocs - (lg.idle_allocs or 0)
  m.no_alloc = extra and extra <= math.max(2, (lg.rx.packets or 0) / 10000)
  if lg and lg.allocs then
    out(fmt("**Allocations on luasip's send path: %s for %s packets (%d streams whose %d s prompt does not " ..
            "end in the window: %s allocations, against %s in the same window with no call, the script's " ..
            "once-a-second loop).** With the looping %d s prompt, %s allocations a loop of a stream: a " ..
            "loop of a shared prompt goes back to the start of the same copy. SIPp's rtp_stream also reads " ..
            "the file once, into memory, and sends from there.",
            extra and thousands(math.max(0, extra)) or "-", thousands(lg.rx.packets or 0), lg.n, MEDIA_LONG_SECS,
            thousands(lg.allocs), lg.idle_allocs and thousands(lg.idle_allocs) or "?", MEDIA_WAV_SECS,
            per_reopen and fmt("%.1f", per_reopen) or "-"))
    out()
  end
  -- the targets of issue 14
  out("| target (issue 14) | figure | met |")
  out("|---|---|---|")
  local best_n = m.lua.best and m.lua.best.n or 0
  local b1000 = at(m.lua, 1000)
  out(fmt("| >= 1,000 concurrent playing streams on one core, p99 interval 20 +- 2 ms, no loss | " ..
          "highest clean: %s%s | %s |", best(m.lua),
          b1000 and fmt(" (at 1000: p99 %s ms, max %s ms, lost %d, %s of a core)", ms(b1000.rx.p99_us),
                        ms(b1000.rx.max_us), b1000.rx.lost or 0, pct(b1000.server_load)) or "",
          best_n >= 1000 and "yes" or "no"))
  -- luasip's CPU per stream over SIPp's at every count both ran in full
  local ratios, all_le = {}, true
  for _, n in ipairs(m.list) do
    local a, b = at(m.lua, n), at(m.sipp, n)
    if a and b and a.complete and b.complete and (b.per_stream or 0) > 0 then
      ratios[#ratios + 1] = fmt("%d: %.2f", n, a.per_stream / b.per_stream)
      if a.per_stream > b.per_stream then all_le = false end
    end
  end
  if #ratios > 0 then
    out(fmt("| CPU per stream <= SIPp rtp_stream's, same run | luasip / SIPp by streams: %s | %s |",
            table.concat(ratios, ", "), all_le and "yes" or "no"))
  end
  if extra then
    out(fmt("| no allocation per packet on the send path | %s allocations for %s packets (%s with the idle " ..
            "server's own) | %s |", thousands(math.max(0, extra)), thousands(lg.rx.packets or 0), thousands(lg.allocs),
            m.no_alloc and "yes" or "no"))
  end
  out()
end

---------------------------------------------------------------------------
-- 7. DTMF (issue 15): concurrent calls each playing a prompt while they
-- collect the RFC 4733 digits SIPp plays from its pcaps; digit latency from
-- the capture timestamp of an event's first packet to the digit in Lua

local DTMF_PCAPS = "/usr/share/sip-tester"
local DTMF_KEYS = { "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "star", "pound" }
local DTMF_EXPECT = "0123456789*#"
local DTMF_CODE = { ["*"] = 10, ["#"] = 11, A = 12, B = 13, C = 14, D = 15 }
local DTMF_GAP = SMOKE and 0.2 or 1          -- seconds between two key presses of a call (SIPp -d)
local DTMF_PORTS = "30000-39999"             -- luasip's media.ports
local DTMF_FILTER = "udp and dst portrange 30000-39999 and udp[9] & 0x7f == 101"

local function dtmf_steps()
  if DTMF_STEPS_ARG then
    local t = {}
    for n in DTMF_STEPS_ARG:gmatch("%d+") do t[#t + 1] = tonumber(n) end
    return t
  end
  return SMOKE and { 6 } or { 250, 500, 1000 }
end

-- the pcaps where SIPp finds them (the directory it runs in), the prompt
-- and the caller's voice; nil and why when something is missing
local function dtmf_tools()
  if not have("sox") then return nil, "no sox (make deps)" end
  if not have("dumpcap") then return nil, "no dumpcap (wireshark's capture tool) to timestamp the events" end
  for _, k in ipairs(DTMF_KEYS) do
    local f = DTMF_PCAPS .. "/dtmf_2833_" .. k .. ".pcap"
    if not readfile(f) then return nil, "no " .. f .. " (SIPp's RFC 4733 pcaps)" end
    if os.execute("cp " .. q(f) .. " " .. q(TMP .. "/")) ~= true then return nil, "cannot copy " .. f end
  end
  -- the prompt: a 4 s sweep (16-bit WAV); the caller's voice: another
  -- sweep, as raw mu-law for rtp_stream; neither holds a DTMF pair
  local ok = os.execute(fmt("sox -n -r 8000 -c 1 -b 16 %s synth 4 sine 300-3000 vol 0.5 >/dev/null 2>&1 && " ..
                            "sox -n -r 8000 -c 1 -t raw -e mu-law -b 8 %s synth 4 sine 200-1000 vol 0.3 " ..
                            ">/dev/null 2>&1", q(TMP .. "/dtmf_prompt.wav"), q(TMP .. "/dtmf_audio.ulaw")))
  if ok ~= true then return nil, "sox could not make the prompt" end
  return true
end

-- the RTP packets of a pcap file (libpcap format, IPv4/UDP) as
-- { t, port (destination), ts, event, e (end bit) }; nil and why
local function read_rtp_events(path)
  local s = readfile(path)
  if not s or #s < 24 then return nil, "no capture" end
  local e, nano
  for _, en in ipairs{ "<", ">" } do
    local m = string.unpack(en .. "I4", s, 1)
    if m == 0xa1b2c3d4 or m == 0xa1b23c4d then e, nano = en, m == 0xa1b23c4d end
  end
  if not e then return nil, "not a libpcap file" end
  local l2 = ({ [0] = 4, [1] = 14, [113] = 16, [276] = 20, [101] = 0 })[string.unpack(e .. "I4", s, 21)]
  if not l2 then return nil, "unknown link type" end
  local evs, pos = {}, 25
  while pos + 16 <= #s do
    local sec, frac, incl = string.unpack(e .. "I4I4I4", s, pos)
    local p = pos + 16
    pos = p + incl
    local ip = p + l2
    if incl >= l2 + 20 + 8 + 16 and (s:byte(ip) >> 4) == 4 then
      local udp = ip + (s:byte(ip) & 15) * 4
      if udp + 8 + 16 <= p + incl then
        local dport = string.unpack(">I2", s, udp + 2)
        local ts = string.unpack(">I4", s, udp + 8 + 4)
        local ev, flags = string.unpack(">BB", s, udp + 8 + 12)
        evs[#evs + 1] = { t = sec + frac / (nano and 1e9 or 1e6), port = dport, ts = ts, event = ev,
                          e = flags >> 7 }
      end
    end
  end
  return evs
end

local function percentile(sorted, p)
  if #sorted == 0 then return nil end
  return sorted[math.max(1, math.ceil(p * #sorted))]
end

-- one run: n calls into a fresh luasip IVR (inband detector forced on
-- or not), each pressing 0123456789*# while the prompt plays
local function dtmf_run(n, inband)
  local label = fmt("%d calls, inband %s", n, inband and "on" or "off")
  local port = free_port()
  local server = spawn("lua-dtmf-uas", PIN_SERVER .. q(LUASIP) .. " " .. q(ROOT .. "/bench/dtmf_uas.lua") .. " " ..
                       port .. " " .. q(TMP .. "/dtmf_prompt.wav") .. " --ports " .. DTMF_PORTS .. " --parent " ..
                       SELF_PID .. (inband and " --inband" or ""))
  local deadline = now() + 10
  while not (readfile(server.out) or ""):match("READY") do
    if rc_of(server) or now() > deadline then
      error("bench/dtmf_uas.lua did not start:\n" .. tail(server.out, 10), 0)
    end
    sleep(0.05)
  end
  local capf = fmt("%s/dtmf-%d-%s.pcap", TMP, n, inband and "inband" or "rfc4733")
  local cap = spawn("dumpcap", PIN_LOAD .. "dumpcap -i lo -P -B 64 -f " .. q(DTMF_FILTER) .. " -w " .. q(capf))
  deadline = now() + 10
  while not (readfile(cap.out) or ""):match("Capturing on") do
    if rc_of(cap) or now() > deadline then
      kill(server)
      return nil, "dumpcap did not start: " .. tail(cap.out, 3)
    end
    sleep(0.05)
  end
  sleep(0.3)
  local rate = math.max(10, math.min(200, n // 4))
  local ramp = n / rate
  local span = 13 * DTMF_GAP          -- a call: a gap, then 12 key presses each followed by a gap
  -- SIPp's rtp_stream takes a port a call upwards of -mp: kept out of
  -- luasip's media ports
  local lport, mport = free_port(), free_ports(4)
  while mport < 40000 or mport > 55000 do mport = free_ports(4) end
  local csv = fmt("%s/sipp-dtmf-%d.csv", TMP, lport)
  local uac = spawn("sipp-dtmf-uac", PIN_LOAD .. table.concat({
    "sipp -nostdin -i 127.0.0.1 -p", lport, "-mi 127.0.0.1 -mp", mport, "-sf", q(ROOT .. "/bench/dtmf_uac.xml"),
    SIPP_BUF, "-r", rate, "-rp 1000", "-m", n, "-l", n,
    "-d", math.floor(DTMF_GAP * 1000), "-timeout", fmt("%ds", math.ceil(ramp + span + 30)), "-timeout_error",
    "-trace_stat -stf", q(csv), "-fd 1", "127.0.0.1:" .. port }, " "))
  local t0 = now()
  -- the window: every call up and pressing keys (the first call's last
  -- key comes at span)
  local w0 = ramp + 0.5
  local w1 = math.max(w0 + 0.5, span - 0.5)
  local function at(t)
    local left = t0 + t - now()
    if left > 0 then sleep(left) end
  end
  at(w0)
  -- the kernel's softirq threads: loopback delivery deferred to them
  -- (ksoftirqd/N) runs after the capture point and before luasip's socket
  local sirq = { tonumber(sh("pgrep -x ksoftirqd/0")), tonumber(sh("pgrep -x ksoftirqd/1")) }
  local ta, s0, u0, k0 = now(), cpu_of(server.pid), cpu_of(uac.pid), cpu_of(cap.pid)
  local q0 = { cpu_of(sirq[1]), cpu_of(sirq[2]) }
  local b0, j0 = cpu_jiffies(PIN and 1 or 0)
  at(w1)
  local tb, s1, u1, k1 = now(), cpu_of(server.pid), cpu_of(uac.pid), cpu_of(cap.pid)
  local q1 = { cpu_of(sirq[1]), cpu_of(sirq[2]) }
  local b1, j1 = cpu_jiffies(PIN and 1 or 0)
  local rc = wait_proc(uac, ramp + span + 40)
  if not rc then kill(uac) end
  -- the IVR writes its digit lines once a second, then a STAT line: wait
  -- for the one that counts every call ended
  deadline = now() + 3
  while (uas_stat(server).ended or 0) < n and now() < deadline do sleep(0.1) end
  os.execute("kill -INT " .. cap.pid .. " 2>/dev/null")
  wait_proc(cap, 10)
  local st = uas_stat(server)
  local text = readfile(server.out) or ""
  kill(server)
  kill(cap)
  if not (s0 and s1) then error("the DTMF IVR died (" .. label .. "):\n" .. tail(server.out, 10), 0) end
  local r = { n = n, inband = inband, rate = rate, stat = st, window = tb - ta }
  local rows = sipp_rows(csv)
  local c = rows and rows[#rows]
  if not c then
    error("SIPp's DTMF caller produced no statistics (" .. uac.cmd .. "):\n" .. tail(uac.out, 10), 0)
  end
  r.ok, r.failed = csv_num(c, "SuccessfulCall(C)"), csv_num(c, "FailedCall(C)")
  r.server_load = (s1 - s0) / r.window
  r.per_call = (s1 - s0) / (n * r.window)       -- s of CPU per call-second
  r.uac_load = u0 and u1 and (u1 - u0) / r.window
  r.cap_load = k0 and k1 and (k1 - k0) / r.window
  r.sirq = {}
  for i = 1, 2 do r.sirq[i] = q0[i] and q1[i] and (q1[i] - q0[i]) / r.window end
  r.others = b0 and b1 and j1 > j0 and math.max(0, (b1 - b0) / (j1 - j0) - r.server_load) or nil
  local cs = readfile(cap.out) or ""
  local got, drop = cs:match("received/dropped on interface.-: (%d+)/(%d+)")
  r.cap_packets, r.cap_drops = tonumber(got), tonumber(drop)
  -- the digits the script got, per call (its RTP port)
  local digits, nd = {}, 0
  for l in text:gmatch("[^\n]+") do
    local p, d, t = l:match("^D (%d+) (%S) ([%d.]+)$")
    if p then
      local list = digits[p] or {}
      digits[p] = list
      list[#list + 1] = { d = d, t = tonumber(t) }
      nd = nd + 1
    end
  end
  r.digits = nd
  -- the key presses on the wire, per port: the first packet of each
  -- (event, RTP timestamp)
  local evs, why = read_rtp_events(capf)
  if not evs then error("DTMF capture (" .. label .. "): " .. why, 0) end
  local presses, np = {}, 0
  for _, e in ipairs(evs) do
    local key = tostring(e.port)
    local l = presses[key] or {}
    presses[key] = l
    local last = l[#l]
    if not last or last.event ~= e.event or last.ts ~= e.ts or e.t - last.tl > 1 then
      l[#l + 1] = { event = e.event, ts = e.ts, t = e.t, tl = e.t }
      np = np + 1
    else
      last.tl = e.t
    end
  end
  r.presses = np
  -- the right digits: every call must have heard 0123456789*# in order
  local calls_seen, good, wrong, missing, extra = 0, 0, 0, 0, 0
  for _, list in pairs(digits) do
    calls_seen = calls_seen + 1
    local s = {}
    for i, x in ipairs(list) do s[i] = x.d end
    s = table.concat(s)
    if s == DTMF_EXPECT then good = good + 1 end
    for i = 1, math.max(#s, #DTMF_EXPECT) do
      local a, b = s:sub(i, i), DTMF_EXPECT:sub(i, i)
      if a == "" then missing = missing + 1
      elseif b == "" then extra = extra + 1
      elseif a ~= b then wrong = wrong + 1 end
    end
  end
  missing = missing + math.max(0, r.ok + r.failed - calls_seen) * #DTMF_EXPECT
  r.calls_good, r.wrong, r.missing, r.extra = good, wrong, missing, extra
  -- latency: each digit against the last press of that key on its port
  -- whose first packet was captured before it (50 ms of slack: a digit
  -- "before" its packet would show as a negative latency, not be lost)
  local lat, unmatched, negative = {}, 0, 0
  for p, list in pairs(digits) do
    local pl = presses[p] or {}
    for _, x in ipairs(list) do
      local code = tonumber(x.d) or DTMF_CODE[x.d]
      local best
      for _, pr in ipairs(pl) do
        if pr.event == code and pr.t <= x.t + 0.05 and not pr.used then best = pr end
      end
      if best then
        best.used = true
        lat[#lat + 1] = x.t - best.t
        if x.t < best.t then negative = negative + 1 end
      else
        unmatched = unmatched + 1
      end
    end
  end
  table.sort(lat)
  r.lat, r.unmatched, r.negative = lat, unmatched, negative
  r.p50, r.p99, r.max = percentile(lat, 0.5), percentile(lat, 0.99), lat[#lat]
  r.complete = r.ok == n and r.failed == 0 and (r.stat.failed or 0) == 0
  r.clean = r.complete and good == n and (r.cap_drops or 0) == 0
  r.why = (not r.complete and fmt("%d ok, %d failed", r.ok, r.failed)) or
          (good < n and fmt("%d calls with wrong digits", n - good)) or
          ((r.cap_drops or 0) > 0 and fmt("capture dropped %d", r.cap_drops)) or "ok"
  note(fmt("%-26s %-22s digits %d/%d (wrong %d, missing %d, extra %d), latency p50 %s p99 %s max %s ms, " ..
           "IVR %s CPU (%s us per call-second), SIPp %s, dumpcap %s, others on its core %s, rx %s, unexpected %s, " ..
           "ksoftirqd/0 %s, ksoftirqd/1 %s",
           label, r.why, nd, n * #DTMF_EXPECT, wrong, missing, extra, r.p50 and fmt("%.3f", r.p50 * 1e3) or "-",
           r.p99 and fmt("%.3f", r.p99 * 1e3) or "-", r.max and fmt("%.3f", r.max * 1e3) or "-", pct(r.server_load),
           us(r.per_call), r.uac_load and pct(r.uac_load) or "?", r.cap_load and pct(r.cap_load) or "?",
           r.others and pct(r.others) or "?", tostring(st.rx or "?"), tostring(st.unexpected or "?"),
           r.sirq[1] and pct(r.sirq[1]) or "?", r.sirq[2] and pct(r.sirq[2]) or "?"))
  return r
end

local function section_dtmf()
  note("7. DTMF: calls collecting RFC 4733 digits from SIPp's pcaps while a prompt plays; inband detector off and on")
  local ok, why = dtmf_tools()
  if not ok then
    note("dtmf: not available (" .. why .. ")")
    R.dtmf = { na = why }
    return
  end
  local res = { runs = {}, steps = dtmf_steps() }
  for _, n in ipairs(res.steps) do
    -- the two runs of a count one after the other: the inband cost is
    -- their difference, in the same conditions
    local a = dtmf_run(n, false)
    local b = dtmf_run(n, true)
    res.runs[#res.runs + 1] = { n = n, off = a, on = b }
    if a.clean then res.best = res.runs[#res.runs] end
    if not (a.complete and b.complete) then break end
  end
  R.dtmf = res
end

local function render_dtmf(M0, load_end)
  local d = R.dtmf
  out("## 7. DTMF: calls collecting RFC 4733 digits while a prompt plays")
  out()
  out(fmt("Measured at commit %s%s, %s, load average %s at the start of the run and %s at the end.", M0.commit,
          M0.dirty and " (with uncommitted changes)" or "", M0.date, M0.load, load_end))
  out()
  if not d or d.na then
    out("Not available: " .. tostring(d and d.na or "the section did not run") .. ".")
    out()
    return
  end
  out("The machine was shared: other engineers' builds and test suites ran on both cores during the run " ..
      "(see the load averages), so single figures move from run to run; what compares two set-ups was " ..
      "measured in the same run, one right after the other.")
  out()
  out(fmt("Each run: a fresh luasip IVR, bench/dtmf_uas.lua: a UA with `media = { ports = \"%s\", codecs = " ..
          "{ \"PCMU\", \"PCMA\", \"telephone-event\" } }` that answers and loops on `call:collect{ prompt = " ..
          "prompt, max = 1, terminators = \"\" }` (a 4 s 16-bit WAV played with barge-in; each digit stops it and " ..
          "the next collect plays it again). SIPp's bench/dtmf_uac.xml places N calls (N/4 a second, at most " ..
          "200) offering PCMU and telephone-event 101, streams its own voice to each (`rtp_stream`, a sweep in " ..
          "mu-law, 50 packets a second a call) and plays SIPp's RFC 4733 pcaps dtmf_2833_0 ... 9, star, pound " ..
          "(`play_pcap_audio`: seven updates 20 ms apart, then three end packets) %g s apart, then hangs up: " ..
          "every call must deliver 0123456789*# to the script, in that order. The IVR is pinned to CPU 1, SIPp " ..
          "and the capture to CPU 0.", DTMF_PORTS, DTMF_GAP))
  out()
  out("**Digit latency** is measured from the first packet of a key press arriving to the digit in Lua: " ..
      "dumpcap captures the telephone-event packets on lo (a BPF filter on the RTP payload type, so only " ..
      "those, ten a key press), and the kernel's capture timestamp (CLOCK_REALTIME, microseconds) of the " ..
      "first packet of each press is compared with the time the script logs as soon as `call:collect` " ..
      "returned the digit: `sip.core.now()`, libev's `ev_now_update()`, which is CLOCK_MONOTONIC plus an " ..
      "offset to CLOCK_REALTIME that libev takes again every half second (so both clocks agree to a few " ..
      "microseconds; a digit logged before its packet would show as a negative latency and is counted). " ..
      "On loopback the capture point is in the sender's sendto(), just before the packet is queued to " ..
      "luasip's socket: the figure covers the socket queue, the wait for luasip's loop (busy sending " ..
      "every prompt's frame each 20 ms), the engine's parse and the digit's way through the scheduler's " ..
      "queue to the coroutine. The engine does not expose its own receive time (SO_TIMESTAMP or the " ..
      "`ev_time()` it reads before recvfrom) to Lua, which would split the figure in two. Each digit is " ..
      "matched with the last press of that key on its call's RTP port captured before it. The loopback " ..
      "delivery itself runs on the sender's CPU (CPU 0, SIPp's): when that CPU is busy the kernel defers it " ..
      "to its ksoftirqd thread, which waits for the CPU like any thread, and that wait is in the figure " ..
      "too; the ksoftirqd columns say how much of that work there was.")
  out()
  out("**Inband detection**: the same calls with `call.media:dtmf_config{ inband = true }` (spandsp's DTMF " ..
      "receiver on every decoded audio frame of the caller; by default it runs only when the peer " ..
      "negotiated no telephone-event) right after the run without it. Its cost per stream is the IVR's " ..
      "CPU (utime+stime, /proc) over a window in which every call is up and pressing keys, " ..
      "on minus off, over calls x seconds.")
  out()
  out("| calls | inband detector | result | digits delivered / expected | wrong / missing / extra | " ..
      "latency p50 / p99 / max (ms) | IVR CPU | IVR CPU per call (us/s) | audio packets received | " ..
      "SIPp / dumpcap / others on the IVR's core | ksoftirqd/0 / ksoftirqd/1 | packets captured / dropped |")
  out("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  local function row(r)
    out(fmt("| %d | %s | %s | %s / %s | %d / %d / %d | %s / %s / %s | %s | %s | %s | %s / %s / %s | %s / %s " ..
            "| %s / %s |",
            r.n, r.inband and "on" or "off", r.clean and "all right" or r.why, thousands(r.digits),
            thousands(r.n * #DTMF_EXPECT), r.wrong, r.missing, r.extra,
            r.p50 and fmt("%.2f", r.p50 * 1e3) or "-", r.p99 and fmt("%.2f", r.p99 * 1e3) or "-",
            r.max and fmt("%.2f", r.max * 1e3) or "-", pct(r.server_load), us(r.per_call),
            r.stat.rx and thousands(r.stat.rx) or "-", r.uac_load and pct(r.uac_load) or "?",
            r.cap_load and pct(r.cap_load) or "?", r.others and pct(r.others) or "?",
            r.sirq[1] and pct(r.sirq[1]) or "?", r.sirq[2] and pct(r.sirq[2]) or "?",
            r.cap_packets and thousands(r.cap_packets) or "?", r.cap_drops and thousands(r.cap_drops) or "?"))
  end
  for _, x in ipairs(d.runs) do
    row(x.off)
    row(x.on)
  end
  out()
  local top = d.runs[#d.runs]
  local best = d.best
  if best then
    local r = best.off
    out(fmt("**Digit latency at %d calls (inband off): p50 %.2f ms, p99 %.2f ms, max %.2f ms over %s digits; " ..
            "%d of %d calls heard exactly 0123456789*#%s.**", r.n, r.p50 * 1e3, r.p99 * 1e3, r.max * 1e3,
            thousands(#r.lat), r.calls_good, r.n,
            r.negative > 0 and fmt(" (%d latencies negative: the clocks' disagreement)", r.negative) or ""))
  end
  if top and top ~= best then
    out(fmt("The largest count tried, %d calls, did not run clean: %s.", top.n, top.off.why))
  end
  local diffs = {}
  for _, x in ipairs(d.runs) do
    if x.off.complete and x.on.complete then
      diffs[#diffs + 1] = fmt("%d calls: %s us/s (%s off, %s on)", x.n, us(x.on.per_call - x.off.per_call),
                              us(x.off.per_call), us(x.on.per_call))
    end
  end
  if #diffs > 0 then
    out("**Inband detection costs, per stream (CPU per second of audio, on minus off): " ..
        table.concat(diffs, "; ") .. ".**")
  end
  out()
  out("| target (issue 15) | figure | met |")
  out("|---|---|---|")
  local r = best and best.off
  local n1000 = r and r.n >= 1000
  out(fmt("| digit latency p99 < 5 ms with 1,000 calls collecting while a prompt plays | %s | %s |",
          r and fmt("p99 %.2f ms (p50 %.2f, max %.2f) at %d calls", r.p99 * 1e3, r.p50 * 1e3, r.max * 1e3, r.n) or
          "no clean run", (r and n1000 and r.p99 < 0.005) and "yes" or "no"))
  out(fmt("| the right digits | %s | %s |",
          r and fmt("%d wrong, %d missing, %d extra of %s", r.wrong, r.missing, r.extra,
                    thousands(r.n * #DTMF_EXPECT)) or "-",
          (r and r.wrong + r.missing + r.extra == 0) and "yes" or "no"))
  out()
end

---------------------------------------------------------------------------
-- 8. Network (issue 18): calls per second with luasip -w 2 against -w 1;
-- the latency of a request to a numeric address while DNS lookups are
-- outstanding on the same loop

local DNS_SAMPLES = SMOKE and 50 or 2000
local DNS_LOOKUPS = SMOKE and 50 or 1000

-- the dns_lat.lua RESULT lines of a finished process, by phase
local function dns_results(p)
  local t = {}
  for line in (readfile(p.out) or ""):gmatch("RESULT [^\n]*") do
    local r = {}
    for k, v in line:gmatch("([%w_]+)=(%S+)") do r[k] = tonumber(v) or v end
    t[r.phase] = r
  end
  return t
end

local function dns_run(peer, label, dns)
  local p = spawn("dns-lat", q(LUASIP) .. " " .. q(ROOT .. "/bench/dns_lat.lua") .. " " .. peer.port ..
                  " --samples " .. DNS_SAMPLES .. " --lookups " .. DNS_LOOKUPS .. (dns and (" --dns " .. dns) or ""))
  local rc = wait_proc(p, 120)
  if not rc then kill(p) end
  local res = dns_results(p)
  if rc ~= 0 or not res.idle or not res.lookups then
    error("bench/dns_lat.lua (" .. label .. ") failed (exit " .. tostring(rc) .. "):\n" .. tail(p.out, 10), 0)
  end
  for _, ph in ipairs{ "idle", "lookups" } do
    local r = res[ph]
    note(fmt("%-26s %-8s OPTIONS p50 %s p99 %s max %s us (%d samples, %d failed), lookups outstanding %d, " ..
             "answered in the phase %d (%.1f s)", label, ph, tostring(r.p50_us), tostring(r.p99_us),
             tostring(r.max_us), r.samples, r.failed, r.outstanding, r.ok_in, r.secs))
  end
  return res
end

local function start_dnsmasq()
  local port = free_port()
  local conf = TMP .. "/dnsmasq.conf"
  writefile(conf, "local=/test/\naddress=/bench.test/127.0.0.1\n")
  local p = spawn("dnsmasq", "dnsmasq --keep-in-foreground --port=" .. port .. " --listen-address=127.0.0.1 " ..
                  "--bind-interfaces --no-resolv --no-hosts --conf-file=" .. q(conf) .. " --pid-file=" ..
                  q(TMP .. "/dnsmasq.pid"))
  local deadline = now() + 5
  while not in_use(port) do
    if rc_of(p) or now() > deadline then
      kill(p)
      return nil, "dnsmasq did not start: " .. tail(p.out, 3)
    end
    sleep(0.05)
  end
  p.port = port
  return p
end

local function section_network()
  note("8. network: luasip -w 2 against -w 1 (SIPp -sn uac -t un), then a request's latency with DNS lookups " ..
       "outstanding")
  local rates = SMOKE and { 50 } or { 4000, 8000, 12000, 16000, 20000, 25000, 30000 }
  local scen = "-sn uac -t un -max_socket 10000"   -- a socket a call; under the open-files limit
  local function workers(n)
    return function()
      return start_lua_uas{ name = "lua-uas-w" .. n, luasip_args = "-w " .. n, workers = n, startup = 30 }
    end
  end
  R.net = {}
  R.net.w1, R.net.w2 = ladders{
    { label = "luasip -w 1", rates = rates, scen = scen, server = workers(1) },
    { label = "luasip -w 2", rates = rates, scen = scen, server = workers(2) } }
  -- the peer: bench/uas.lua, whose C core answers OPTIONS
  local peer = start_lua_uas{ name = "lua-uas-peer" }
  R.net.silent = dns_run(peer, "DNS silent")
  if have("dnsmasq") then
    local dm, why = start_dnsmasq()
    if dm then
      R.net.answered = dns_run(peer, "DNS dnsmasq", "127.0.0.1:" .. dm.port)
      kill(dm)
    else
      R.net.answered_na = why
    end
  else
    R.net.answered_na = "dnsmasq is not installed"
  end
  kill(peer)
end

local function render_network(M0, load_end)
  local n = R.net
  out("## 8. Network: luasip -w 2 against one worker; DNS lookups on the loop")
  out()
  out(fmt("Measured at commit %s%s, %s, load average %s at the start of the run and %s at the end.", M0.commit,
          M0.dirty and " (with uncommitted changes)" or "", M0.date, M0.load, load_end))
  out()
  if not n then
    out("Not available: the section did not run.")
    out()
    return
  end
  out("The machine was shared: other engineers' builds and test suites ran on both cores during the run " ..
      "(see the load averages), so single figures move from run to run; what compares two set-ups was " ..
      "measured in the same run, one right after the other.")
  out()
  out(fmt("**Workers.** The same UAS (bench/uas.lua) run as `luasip -w 1` and `luasip -w 2` (a supervisor and " ..
          "N worker processes sharing the listen port with SO_REUSEPORT), each step on a fresh server, " ..
          "SIPp `-sn uac -t un` at the rate for %g s, the ladder rules of section 1 (clean: SIPp exited 0, " ..
          "every call successful, 90%% of the rate reached). `-t un` gives every call a socket of its own: " ..
          "the kernel spreads UDP datagrams over the workers by source address and port, so with SIPp's " ..
          "default single socket every call would land on the same worker. Server CPU is the supervisor's " ..
          "and its workers' utime+stime (/proc), over the step; the two servers' steps alternate rate by " ..
          "rate.", STEP))
  out()
  out(fmt("This machine has %s cores: SIPp's client takes most of one at high rates (its CPU is in the " ..
          "last column), so `-w 2` cannot have two cores to itself and its ratio to `-w 1` here is a floor, " ..
          "not what two workers give. To measure the scaling: run SIPp on another machine (or pin it with " ..
          "`taskset` to cores of its own), and compare `-w N` with `-w 1` on N free cores, e.g. " ..
          "`taskset -c 2,3 luasip -w 2 bench/uas.lua PORT` against `taskset -c 2 luasip -w 1 ...`, at rates " ..
          "SIPp reaches without nearing a core itself (several SIPp clients if needed).", sh("nproc")))
  out()
  out("| rate (cps) | -w 1 | CPU/call (us) | CPU | drops | -w 2 | CPU/call (us) | CPU | drops " ..
      "| SIPp uac CPU (vs -w 1 / vs -w 2) |")
  out("|---:|---|---:|---:|---:|---|---:|---:|---:|---:|")
  local l1, l2 = n.w1, n.w2
  local rates, seen = {}, {}
  for _, l in ipairs{ l1, l2 } do
    for _, s in ipairs(l.steps) do
      if not seen[s.rate] then seen[s.rate] = true; rates[#rates + 1] = s.rate end
    end
  end
  table.sort(rates)
  for _, rate in ipairs(rates) do
    local a, b = step_at(l1, rate), step_at(l2, rate)
    local ar, ac, al, ad = cell(a)
    local br, bc, bl, bd = cell(b)
    out(fmt("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s |", rate, ar, ac, al, ad, br, bc, bl, bd,
            a and a.uac_load and pct(a.uac_load) or "-", b and b.uac_load and pct(b.uac_load) or "-"))
  end
  out()
  local b1, b2 = l1.best and l1.best.rate, l2.best and l2.best.rate
  out(fmt("**Highest rate with 0 failed calls: -w 1 %s cps, -w 2 %s cps (ratio %s).**", best_of(l1), best_of(l2),
          b1 and b2 and fmt("%.2f", b2 / b1) or "-"))
  local last = l2.steps[#l2.steps]
  if last and not last.clean and last.uac_load and last.uac_load > 0.85 then
    out(fmt("At %d cps SIPp's client used %s of a core: the load generator, not the two workers, is the " ..
            "ceiling there.", last.rate, pct(last.uac_load)))
  end
  out()
  out(fmt("**DNS lookups on the loop.** bench/dns_lat.lua sends OPTIONS to a numeric address (127.0.0.1, " ..
          "another bench/uas.lua whose C core answers) one at a time, a 2 ms sleep between two, %d of " ..
          "them, and times each round trip with `sip.now()` around `ua:request`; first with nothing else on " ..
          "its loop, then while %d coroutines use `sip.resolve` on the same UA's resolver (c-ares on the " ..
          "loop) for names with a port (A and AAAA only; every name a new one, no cache hit). Against a " ..
          "silent server (a UDP socket of the script's own, never read; the resolver's timeout 60 s) all %d " ..
          "lookups stay outstanding for the whole phase; against dnsmasq (answering *.bench.test from its " ..
          "configuration) each coroutine resolves, sleeps 1 s and again, so lookups are answered " ..
          "continuously.", DNS_SAMPLES, DNS_LOOKUPS, DNS_LOOKUPS))
  out()
  out("| DNS server | phase | lookups outstanding at its end | lookups answered in it (a second) " ..
      "| OPTIONS round trip p50 / p99 / max (us) | mean (us) | failed |")
  out("|---|---|---:|---:|---:|---:|---:|")
  local function rows(name, res)
    for _, ph in ipairs{ "idle", "lookups" } do
      local r = res[ph]
      out(fmt("| %s | %s | %d | %d (%.0f) | %s / %s / %s | %s | %d |", name,
              ph == "idle" and "no lookup" or fmt("%d lookups", DNS_LOOKUPS), r.outstanding, r.ok_in,
              r.secs > 0 and r.ok_in / r.secs or 0, thousands(r.p50_us), thousands(r.p99_us), thousands(r.max_us),
              thousands(r.mean_us), r.failed))
    end
  end
  rows("silent", n.silent)
  if n.answered then rows("dnsmasq", n.answered) else out("| dnsmasq | not available: " .. n.answered_na .. " |") end
  out()
  local s = n.silent
  out(fmt("**OPTIONS round trip to a numeric address, p50 / p99: %s / %s us with no lookup, %s / %s us with %d " ..
          "lookups outstanding against a silent server%s.**", thousands(s.idle.p50_us), thousands(s.idle.p99_us),
          thousands(s.lookups.p50_us), thousands(s.lookups.p99_us), s.lookups.outstanding,
          n.answered and fmt("; %s / %s us with no lookup and %s / %s us while dnsmasq answered %.0f lookups a " ..
                             "second", thousands(n.answered.idle.p50_us), thousands(n.answered.idle.p99_us),
                             thousands(n.answered.lookups.p50_us), thousands(n.answered.lookups.p99_us),
                             n.answered.lookups.ok_in / math.max(1e-9, n.answered.lookups.secs)) or ""))
  out()
  out("| target (issue 18) | figure | met |")
  out("|---|---|---|")
  out(fmt("| calls per second scale with `-w N` | -w 2 / -w 1, highest clean rate: %s (SIPp and both workers " ..
          "on %s cores: see above) | - |", b1 and b2 and fmt("%.2f (%d / %d cps)", b2 / b1, b2, b1) or "-",
          sh("nproc")))
  out(fmt("| a DNS lookup never blocks the loop | p99 of a request to a numeric address: %s us without, %s us " ..
          "with %d lookups outstanding (silent server); met when within twice the first, or 1 ms more " ..
          "| %s |", thousands(s.idle.p99_us),
          thousands(s.lookups.p99_us), s.lookups.outstanding,
          (s.lookups.failed == 0 and s.lookups.outstanding >= DNS_LOOKUPS and
           s.lookups.p99_us <= math.max(2 * s.idle.p99_us, s.idle.p99_us + 1000)) and "yes" or "no"))
  out()
end

---------------------------------------------------------------------------
-- 9. Subscriptions: subscriptions a second through the luasip notifier
-- (bench/sub_uas.lua) and through SIPp's (bench/subscribe_uas.xml), both
-- under SIPp's subscriber (bench/subscribe_uac.xml); the memory of
-- 10,000 live subscriptions; the CPU a NOTIFY costs with 100 and with
-- 10,000 of them

local SUB_RATES = SMOKE and { 50 } or { 500, 1000, 2000, 4000 }
local SUB_FEW = SMOKE and 20 or 100          -- live subscriptions, the small case
local SUB_MANY = SMOKE and 200 or 10000      -- and the large one
local SUB_HOLD_RATE = SMOKE and 200 or 2000  -- new subscriptions a second while they are set up
local SUB_NOTIFIES = SMOKE and 400 or 20000  -- NOTIFYs a phase
local SUB_NOTIFY_RATE = SMOKE and 200 or 2000
local SUB_ROUNDS = SMOKE and 1 or 4          -- NOTIFY phases a hold, alternating between the two
local SUB_CG_RATE = SMOKE and 50 or 100      -- under callgrind: subscriptions set up a second
local SUB_CG_NOTIFIES = SMOKE and 100 or 1000
local SUB_CG_NOTIFY_RATE = 100
local SUB_SETTLE = SMOKE and 2 or 45         -- at most this long for the set-up's transactions to end
local SUB_UAC = "-sf " .. q(ROOT .. "/bench/subscribe_uac.xml") .. " -s bob"
local SUB_UAS = "-sf " .. q(ROOT .. "/bench/subscribe_uas.xml")

-- the luasip notifier, with its command file
local function start_sub_uas()
  local port = free_port()
  local ctl = fmt("%s/sub-ctl-%d", TMP, port)
  writefile(ctl, "")
  local cmd = q(LUASIP) .. " " .. q(ROOT .. "/bench/sub_uas.lua") .. " " .. port .. " --ctl " .. q(ctl) ..
              " --parent " .. SELF_PID
  local p = spawn("lua-notifier", cmd)
  p.port, p.ctl, p.cmds = port, ctl, 0
  local deadline = now() + 10
  while not (readfile(p.out) or ""):find("READY", 1, true) do
    if rc_of(p) or now() > deadline then
      error("the Lua notifier did not start (" .. cmd .. "):\n" .. tail(p.out, 10), 0)
    end
    sleep(0.05)
  end
  p.idle_rss = status_kb(p.pid, "VmRSS")
  return p
end

-- a command to the notifier (bench/sub_uas.lua), its DONE line as a table
local function sub_command(p, line, timeout)
  p.cmds = p.cmds + 1
  local f = assert(io.open(p.ctl, "a"))
  f:write(line, "\n")
  f:close()
  local pat = "\nDONE " .. p.cmds .. " ([^\n]*)\n"
  local deadline = now() + timeout
  while true do
    local m = (readfile(p.out) or ""):match(pat)
    if m then
      local t = {}
      for k, v in m:gmatch("([%w_]+)=(%S+)") do t[k] = tonumber(v) or v end
      return t
    end
    if rc_of(p) or now() > deadline then
      error("the Lua notifier did not answer '" .. line .. "':\n" .. tail(p.out, 10), 0)
    end
    sleep(0.1)
  end
end

local function last_csv(p)
  local rows = sipp_rows(p.csv)
  return rows and rows[#rows]
end

-- n subscriptions that SIPp sets up and holds in a fresh notifier of one
-- side ("lua" or "sipp"); the memory once they are all up and the set-up's
-- transactions ended. Returns the hold, still running (sub_stop ends it).
local function sub_hold(side, n, hold)
  local lua = side == "lua"
  local r = { side = side, n = n, label = fmt("%s notifier, %s live", lua and "Lua" or "SIPp", thousands(n)),
              rounds = {} }
  local server = lua and start_sub_uas() or start_sipp_uas(SUB_UAS, "sipp-notifier")
  r.server = server
  sleep(0.3)
  if lua then r.heap0 = sub_command(server, "gc", 10).heap_kb end
  r.idle_rss = status_kb(server.pid, "VmRSS")
  local setup = n / SUB_HOLD_RATE
  local c = start_sipp_uac{ scen = SUB_UAC .. " -key expires 600 -aa", rate = SUB_HOLD_RATE, calls = n,
                            limit = n + 10, duration = 600000, port = server.port,
                            timeout = setup + SUB_SETTLE + hold + 30, name = "sipp-subscriber" }
  r.client = c
  -- every subscription up: the notifier counts them (luasip); SIPp's
  -- notifier says nothing, so: all created, then a second for the last
  -- NOTIFY and its 200
  local deadline = now() + setup + 20
  while now() < deadline do
    if lua then
      if (uas_stat(server).live or 0) >= n then break end
    elseif csv_num(last_csv(c), "TotalCallCreated") >= n then
      sleep(1)
      break
    end
    if rc_of(c) or not alive(server.pid) then break end
    sleep(0.2)
  end
  r.setup_s = now() - c.t0
  -- the set-up's transactions end (SUBSCRIBE: Timer J, 32 s; NOTIFY:
  -- Timer K, 5 s): what stays is what a live subscription holds
  deadline = now() + SUB_SETTLE
  if lua then
    while now() < deadline and (uas_stat(server).txns or 1) > 0 do sleep(0.5) end
    local g = sub_command(server, "gc", 10)
    r.live, r.txns, r.dialogs, r.heap1 = g.live, g.txns, g.dialogs, g.heap_kb
  else
    sleep(math.min(SUB_SETTLE, 5))
  end
  r.rss = status_kb(server.pid, "VmRSS")
  r.hwm = status_kb(server.pid, "VmHWM")
  if not (r.rss and r.idle_rss) then
    error(r.label .. ": the notifier died:\n" .. tail(server.out, 10), 0)
  end
  r.rss_per = (r.rss - r.idle_rss) / n
  r.heap_per = r.heap1 and r.heap0 and (r.heap1 - r.heap0) / n or nil
  local csv = last_csv(c)
  r.failed = csv_num(csv, "FailedCall(C)")
  r.up = lua and r.live or (csv_num(csv, "TotalCallCreated") - r.failed)
  note(fmt("%-28s up %d of %d (%.1f s), %s transactions left, RSS %s -> %s kB (HWM %s): %.2f KiB/sub%s",
           r.label, r.up, n, r.setup_s, r.txns and tostring(r.txns) or "-", tostring(r.idle_rss), tostring(r.rss),
           tostring(r.hwm), r.rss_per, r.heap_per and fmt(", Lua heap %.2f KiB/sub", r.heap_per) or ""))
  return r
end

-- the NOTIFYs of a luasip hold, round-robin at a fixed rate (bench/sub_uas.lua
-- times them); one round more in r.rounds
local function sub_notify(r)
  local server, c = r.server, r.client
  local u0, sd0, cd0 = cpu_of(c.pid), udp_drops(server.port) or 0, udp_drops(c.lport) or 0
  local aa0 = csv_num(last_csv(c), "AutoAnswered(C)")
  local t0 = now()
  local d = sub_command(server, fmt("notify %d %d", SUB_NOTIFIES, SUB_NOTIFY_RATE),
                        2 * SUB_NOTIFIES / SUB_NOTIFY_RATE + 70)
  local u1 = cpu_of(c.pid)
  d.uac_load = u0 and u1 and (u1 - u0) / math.max(1e-9, now() - t0) or nil
  d.server_drops = (udp_drops(server.port) or 0) - sd0
  d.client_drops = (udp_drops(c.lport) or 0) - cd0
  sleep(1.2)   -- SIPp's next statistics row
  d.auto_answered = csv_num(last_csv(c), "AutoAnswered(C)") - aa0
  d.rate = d.send_s > 0 and d.sent / d.send_s or 0
  d.per_answered = d.ok > 0 and d.clock_answered / d.ok or nil
  d.per_drained = d.ok > 0 and d.clock_drained / d.ok or nil
  d.per_ticks = d.ok > 0 and d.ticks_drained / CLK_TCK / d.ok or nil
  d.load = d.answered_s > 0 and d.clock_answered / d.answered_s or nil
  r.rounds[#r.rounds + 1] = d
  -- the least disturbed round (the machine is shared) is the figure
  if d.per_drained and d.failed == 0 and (not r.best or d.per_drained < r.best.per_drained) then r.best = d end
  note(fmt("%-28s round %d: %d NOTIFYs at %.0f/s: %d ok, %d failed, %s us/NOTIFY answered, %s with Timer K " ..
           "(%s from /proc ticks), SIPp %s CPU, drops %d/%d", r.label, #r.rounds, d.sent, d.rate, d.ok, d.failed,
           us(d.per_answered), us(d.per_drained), us(d.per_ticks), d.uac_load and pct(d.uac_load) or "?",
           d.server_drops, d.client_drops))
end

local function sub_stop(r)
  kill(r.client)
  kill(r.server)
end

-- the total Ir of a callgrind dump
local function cg_total(file)
  local s = sh("callgrind_annotate --auto=no --threshold=100 " .. q(file) .. " | grep 'PROGRAM TOTALS'")
  return tonumber(((s:match("^%s*([%d,]+)") or ""):gsub(",", "")))
end

-- instructions per NOTIFY: the luasip notifier under callgrind holds n
-- subscriptions; callgrind_control dumps (and zeroes) its counters at
-- three points: once they are up and settled, after an idle window as
-- long as the NOTIFY phase, after the phase. Phase minus idle, over the
-- NOTIFYs answered.
local function sub_callgrind(n, host, named)
  local label = fmt("callgrind, %s live", thousands(n))
  local outf = fmt("%s/sub-cg-%d.callgrind", TMP, n)
  local port = free_port()
  local ctl = fmt("%s/sub-ctl-%d", TMP, port)
  writefile(ctl, "")
  local cmd = "valgrind --tool=callgrind --callgrind-out-file=" .. q(outf) .. " " .. q(host) .. " " .. q(LUASIP) ..
              " " .. q(ROOT .. "/bench/sub_uas.lua") .. " " .. port .. " --ctl " .. q(ctl) ..
              " --parent " .. SELF_PID
  local server = spawn("lua-notifier-cg", cmd)
  server.port, server.ctl, server.cmds = port, ctl, 0
  local deadline = now() + 120
  while not (readfile(server.out) or ""):find("READY", 1, true) do
    if rc_of(server) or now() > deadline then
      error("the Lua notifier under callgrind did not start:\n" .. tail(server.out, 10), 0)
    end
    sleep(0.2)
  end
  local phase = SUB_CG_NOTIFIES / SUB_CG_NOTIFY_RATE + 5   -- and Timer K
  local setup = n / SUB_CG_RATE
  local c = start_sipp_uac{ scen = SUB_UAC .. " -key expires 600 -aa", rate = SUB_CG_RATE, calls = n,
                            limit = n + 10, duration = 600000, port = port,
                            timeout = 2 * setup + 2 * SUB_SETTLE + 2 * phase + 120, name = "sipp-subscriber-cg" }
  deadline = now() + 2 * setup + 60
  while now() < deadline and (uas_stat(server).live or 0) < n do
    if rc_of(c) or rc_of(server) then break end
    sleep(0.5)
  end
  deadline = now() + SUB_SETTLE
  while now() < deadline and (uas_stat(server).txns or 1) > 0 do sleep(0.5) end
  local st = uas_stat(server)
  local r = { n = n, up = st.live or 0, txns = st.txns }
  local function dump()
    if os.execute("callgrind_control -d " .. server.pid .. " >/dev/null 2>&1") ~= true then
      error(label .. ": callgrind_control failed", 0)
    end
  end
  dump()                                  -- .1: start-up and set-up
  local t0 = now()
  sleep(phase + 0.5)
  r.idle_s = now() - t0
  dump()                                  -- .2: idle
  t0 = now()
  local d = sub_command(server, fmt("notify %d %d", SUB_CG_NOTIFIES, SUB_CG_NOTIFY_RATE), 2 * phase + 70)
  r.phase_s = now() - t0
  dump()                                  -- .3: the NOTIFYs
  kill(c)
  kill(server)
  r.idle, r.phase = cg_total(outf .. ".2"), cg_total(outf .. ".3")
  if not (r.idle and r.phase) then error(label .. ": no callgrind totals in " .. outf .. ".2/.3", 0) end
  r.sent, r.ok, r.failed = d.sent, d.ok, d.failed
  r.per = d.ok > 0 and (r.phase - r.idle * r.phase_s / r.idle_s) / d.ok or nil
  -- the Lua collector's part (luaC_step and what it calls: the host keeps
  -- the name, the stripped lua5.4 does not)
  -- (absent from a dump with the names: it did not run)
  local gi = annotate_inclusive(outf .. ".2", { { "luaC_step" } }).luaC_step or (named and 0)
  local gp = annotate_inclusive(outf .. ".3", { { "luaC_step" } }).luaC_step or (named and 0)
  r.gc_per = gp and gi and d.ok > 0 and (gp - gi * r.phase_s / r.idle_s) / d.ok or nil
  note(fmt("%-28s up %d, %d NOTIFYs (%d ok): %s Ir each, Lua GC %s (phase %s Ir in %.1f s, idle %s Ir in %.1f s)",
           label, r.up, d.sent, d.ok, r.per and thousands(r.per) or "-", r.gc_per and thousands(r.gc_per) or "-",
           thousands(r.phase), r.phase_s, thousands(r.idle), r.idle_s))
  return r
end

local function section_subscriptions()
  note("9. subscriptions: SIPp's subscriber against the Lua notifier and SIPp's, rate by rate; " ..
       thousands(SUB_MANY) .. " live subscriptions; NOTIFYs with " .. SUB_FEW .. " and " ..
       thousands(SUB_MANY) .. " live")
  local S = {}
  local scen = SUB_UAC .. " -key expires 60"
  S.lua, S.sipp = ladders{
    { label = "SUBSCRIBE, Lua notifier", rates = SUB_RATES, scen = scen, unit = "sub",
      server = start_sub_uas },
    { label = "SUBSCRIBE, SIPp notifier", rates = SUB_RATES, scen = scen, unit = "sub",
      server = function() return start_sipp_uas(SUB_UAS, "sipp-notifier") end } }
  -- both luasip holds live at once, their NOTIFY rounds alternating, so a
  -- drift of the machine's speed favours neither
  local phase = 2 * SUB_NOTIFIES / SUB_NOTIFY_RATE + 20
  S.few = sub_hold("lua", SUB_FEW, SUB_MANY / SUB_HOLD_RATE + SUB_SETTLE + 20 + 2 * SUB_ROUNDS * phase)
  S.many = sub_hold("lua", SUB_MANY, 2 * SUB_ROUNDS * phase)
  for i = 1, SUB_ROUNDS do
    -- few, many; then many, few: neither always goes first
    local a, b = S.few, S.many
    if i % 2 == 0 then a, b = b, a end
    sub_notify(a)
    sub_notify(b)
  end
  sub_stop(S.few)
  sub_stop(S.many)
  S.sipp_many = sub_hold("sipp", SUB_MANY, 0)
  sub_stop(S.sipp_many)
  -- instructions per NOTIFY: repeatable where CPU time on this machine is not
  if have("valgrind") and have("callgrind_control") and have("callgrind_annotate") then
    local host = build_host()
    S.cg_host = host and "a Lua host linked with liblua5.4.a, as in section 3" or "lua5.4"
    S.cg_few = sub_callgrind(SUB_FEW, host or sh("command -v lua5.4"), host ~= nil)
    S.cg_many = sub_callgrind(SUB_MANY, host or sh("command -v lua5.4"), host ~= nil)
  else
    S.cg_na = "valgrind (callgrind) is not installed"
    note("subscriptions under callgrind: not available (" .. S.cg_na .. ")")
  end
  R.sub = S
end

local function render_subscriptions(M0, load_end)
  local S = R.sub
  out("## 9. Subscriptions: the luasip notifier under SIPp's subscriber")
  out()
  out(fmt("Measured at commit %s%s, %s, load average %s at the start of the run and %s at the end.", M0.commit,
          M0.dirty and " (with uncommitted changes)" or "", M0.date, M0.load, load_end))
  out()
  if not S then
    out("Not available: the section did not run.")
    out()
    return
  end
  out("The machine was shared: other engineers' builds and test suites ran on both cores during the run " ..
      "(see the load averages), so single figures move from run to run; what compares two set-ups was " ..
      "measured in the same run, one right after the other.")
  out()
  out(fmt("**Subscriptions a second.** SIPp with bench/subscribe_uac.xml: SUBSCRIBE (Expires 60), its 200, " ..
          "the first NOTIFY (active) and its 200, then at once the un-SUBSCRIBE in the dialog (Expires 0), " ..
          "its 200, the NOTIFY that says terminated and its 200: two SUBSCRIBE+NOTIFY pairs, eight messages, " ..
          "a subscription. The luasip notifier, bench/sub_uas.lua, is `ua:on(\"SUBSCRIBE\", fn)` with " ..
          "`sub:accept{ body = \"open\", content_type = \"text/plain\" }` and `sub:wait()`; the library " ..
          "answers the un-SUBSCRIBE. SIPp's own notifier, bench/subscribe_uas.xml, is the reference " ..
          "(SIPp's `-sn uas` serves INVITE only). Each step: a fresh notifier, %g s of subscriptions at the " ..
          "rate, section 1's ladder rules. CPU per subscription is the notifier's utime+stime over the step " ..
          "/ subscriptions completed; the expiry of the luasip notifier's transactions (the SUBSCRIBEs' " ..
          "Timer J, 32 s later; the NOTIFYs' Timer K, 5 s) falls mostly outside the step.", STEP))
  out()
  out("| rate (subs/s) | Lua notifier | CPU/sub (us) | CPU | drops | SIPp notifier | CPU/sub (us) | CPU | drops " ..
      "| SIPp subscriber CPU (vs Lua / vs SIPp) |")
  out("|---:|---|---:|---:|---:|---|---:|---:|---:|---:|")
  local rates, seen = {}, {}
  for _, l in ipairs{ S.lua, S.sipp } do
    for _, s in ipairs(l.steps) do
      if not seen[s.rate] then seen[s.rate] = true; rates[#rates + 1] = s.rate end
    end
  end
  table.sort(rates)
  for _, rate in ipairs(rates) do
    local a, b = step_at(S.lua, rate), step_at(S.sipp, rate)
    local ar, ac, al, ad = cell(a)
    local br, bc, bl, bd = cell(b)
    out(fmt("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s |", rate, ar, ac, al, ad, br, bc, bl, bd,
            a and a.uac_load and pct(a.uac_load) or "-", b and b.uac_load and pct(b.uac_load) or "-"))
  end
  out()
  local common
  for _, a in ipairs(S.lua.steps) do
    local b = step_at(S.sipp, a.rate)
    if a.clean and b and b.clean then common = a.rate end
  end
  local la, sb = common and step_at(S.lua, common), common and step_at(S.sipp, common)
  out(fmt("**Highest rate with 0 failed: Lua notifier %s subscriptions/s, SIPp notifier %s.%s**", best_of(S.lua),
          best_of(S.sipp), la and fmt(" CPU per subscription at %d/s: Lua %s us, SIPp %s us (ratio %.2f).", common,
                                       us(la.server_per), us(sb.server_per), la.server_per / sb.server_per) or ""))
  out()
  out(fmt("**Live subscriptions.** SIPp's subscriber sets up N subscriptions (Expires 600, %s a second) and " ..
          "holds them (`-d`: it waits before its un-SUBSCRIBE; `-aa`: it answers the NOTIFYs of the wait " ..
          "itself). Once every one is up (the luasip notifier counts them; for SIPp's: all created, then 1 s) " ..
          "and the transactions of the set-up have ended (the luasip notifier's `ua:stats().transactions` at " ..
          "0, waited for %g s at most; SIPp's: 5 s), RSS per live subscription = (VmRSS - VmRSS before the " ..
          "first) / N, and the Lua heap per subscription the same with `collectgarbage(\"count\")` after a " ..
          "full collection in the notifier, before and after. VmHWM is the peak, transactions included. " ..
          "The set-up's transactions were all live at once (32 s each), and glibc keeps most of what they " ..
          "freed, so the RSS figure is an upper bound of what a subscription holds; the Lua heap figure is " ..
          "exact for the Lua side (the subscription, its coroutines, the SUBSCRIBE it keeps) and leaves out " ..
          "the C core's dialog.",
          thousands(SUB_HOLD_RATE), SUB_SETTLE))
  out()
  out("| notifier | live subscriptions | up (s) | transactions left | RSS before (kB) | RSS (kB) | VmHWM (kB) " ..
      "| RSS per subscription (KiB) | Lua heap per subscription (KiB) | failed (SIPp) |")
  out("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for _, r in ipairs{ S.few, S.many, S.sipp_many } do
    out(fmt("| %s | %s | %.1f | %s | %s | %s | %s | %.2f | %s | %d |", r.side == "lua" and "luasip" or "SIPp",
            thousands(r.up), r.setup_s, r.txns and tostring(r.txns) or "-", tostring(r.idle_rss), tostring(r.rss),
            tostring(r.hwm), r.rss_per, r.heap_per and fmt("%.2f", r.heap_per) or "-", r.failed))
  end
  out()
  local m, sm = S.many, S.sipp_many
  out(fmt("**%s live subscriptions: luasip %.2f KiB RSS each (Lua heap %s KiB), SIPp's notifier %.2f KiB.**",
          thousands(m.up), m.rss_per, m.heap_per and fmt("%.2f", m.heap_per) or "-", sm.rss_per))
  out()
  out(fmt("**Cost of a NOTIFY.** With the subscriptions above still live (%s in one notifier, %s in another), " ..
          "each luasip notifier in turn sends %s NOTIFYs, round-robin over its subscriptions, %s a second " ..
          "(`sub:notify{ body = }`, each in a coroutine of its own; SIPp answers 200), %d rounds each, " ..
          "alternating (the first pair small then large, the next large then small). The notifier reads its " ..
          "own CPU time (`os.clock()`: utime+stime of the process to the microsecond, where /proc/self/stat " ..
          "counts 10 ms ticks; the two agree) when the first is due, once every one has its answer, and once " ..
          "their client transactions have ended (Timer K, 5 s later): CPU per NOTIFY is that time / NOTIFYs " ..
          "answered, without and with the expiry. Nothing else runs in the notifier meanwhile (its STAT line " ..
          "once a second). The figure of a case is its least disturbed round (the lowest).",
          thousands(SUB_FEW), thousands(SUB_MANY), thousands(SUB_NOTIFIES),
          thousands(SUB_NOTIFY_RATE), SUB_ROUNDS))
  out()
  out("| live subscriptions | round | NOTIFYs | 200 | failed | rate reached (/s) | CPU/NOTIFY (us) " ..
      "| with Timer K (us) | CPU | SIPp subscriber CPU | answered by SIPp | drops |")
  out("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for _, r in ipairs{ S.few, S.many } do
    for i, d in ipairs(r.rounds) do
      out(fmt("| %s | %d | %s | %s | %d | %.0f | %s | %s | %s | %s | %s | %d / %d |", thousands(r.up), i,
              thousands(d.sent), thousands(d.ok), d.failed, d.rate, us(d.per_answered), us(d.per_drained),
              d.load and pct(d.load) or "-", d.uac_load and pct(d.uac_load) or "-", thousands(d.auto_answered),
              d.server_drops, d.client_drops))
    end
  end
  out()
  local a, b = S.few.best or {}, S.many.best or {}
  local ratio = a.per_drained and b.per_drained and b.per_drained / a.per_drained
  out(fmt("**CPU per NOTIFY, lowest round: %s us with %s live subscriptions, %s us with %s: ratio %s** " ..
          "(with Timer K; without: %s us, %s us, %s).", us(a.per_drained), thousands(S.few.up),
          us(b.per_drained), thousands(S.many.up), ratio and fmt("%.2f", ratio) or "-", us(a.per_answered),
          us(b.per_answered),
          a.per_answered and b.per_answered and fmt("%.2f", b.per_answered / a.per_answered) or "-"))
  out()
  local ca, cm = S.cg_few, S.cg_many
  local cg_ratio = ca and cm and ca.per and cm.per and cm.per / ca.per
  if ca and cm then
    out(fmt("**Instructions per NOTIFY.** The same notifier under `valgrind --tool=callgrind` (run by %s), " ..
            "the subscriptions set up by SIPp at %d a second and settled as above, then %s NOTIFYs at %d a " ..
            "second. `callgrind_control -d` dumps and zeroes the counters once the subscriptions are up, after " ..
            "an idle window as long as the phase, and after the phase (its answers and Timer K included); " ..
            "instructions per NOTIFY = (phase - idle, scaled to the phase's length) / NOTIFYs answered. " ..
            "Instruction counts do not depend on what else the machine runs; they do depend on when the " ..
            "Lua collector runs: it is paced by the heap's size (generational: a minor collection each time " ..
            "the heap grew by a fifth, a major one when it doubled), so over the phase the small heap is " ..
            "collected several times and the large one (tens of MB) perhaps not at all. Its share, " ..
            "`luaC_step` with what it calls, is shown apart; the rest is what compares.", S.cg_host, SUB_CG_RATE,
            thousands(SUB_CG_NOTIFIES), SUB_CG_NOTIFY_RATE))
    out()
    out("| live subscriptions | NOTIFYs (200) | failed | phase (Ir) | idle (Ir, same length) | Ir per NOTIFY " ..
        "| of which the Lua collector | the rest |")
    out("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for _, r in ipairs{ ca, cm } do
      out(fmt("| %s | %s (%s) | %d | %s | %s | %s | %s | %s |", thousands(r.up), thousands(r.sent), thousands(r.ok),
              r.failed, thousands(r.phase), thousands(r.idle * r.phase_s / r.idle_s),
              r.per and thousands(r.per) or "-", r.gc_per and thousands(r.gc_per) or "-",
              r.per and r.gc_per and thousands(r.per - r.gc_per) or "-"))
    end
    out()
    out(fmt("**Instructions per NOTIFY: %s with %s live subscriptions, %s with %s (ratio %s).**",
            ca.per and thousands(ca.per) or "-", thousands(ca.up), cm.per and thousands(cm.per) or "-",
            thousands(cm.up), cg_ratio and fmt("%.2f", cg_ratio) or "-"))
    out()
  else
    out("Instructions per NOTIFY: not available (" .. tostring(S.cg_na) .. ").")
    out()
  end
  out("| target | figure | met |")
  out("|---|---|---|")
  local sub_ok = m.up >= SUB_MANY and m.failed == 0
  out(fmt("| %s live subscriptions held | %s up, %d failed; %.2f KiB RSS, %s KiB Lua heap each | %s |",
          thousands(SUB_MANY), thousands(m.up), m.failed, m.rss_per,
          m.heap_per and fmt("%.2f", m.heap_per) or "-", sub_ok and "yes" or "no"))
  out(fmt("| CPU per NOTIFY flat in the number of subscriptions (within 20%%, the noise of this machine) " ..
          "| %s us with %s, %s us with %s | %s |", us(a.per_drained), thousands(S.few.up), us(b.per_drained),
          thousands(S.many.up), (ratio and ratio <= 1.2) and "yes" or "no"))
  if cg_ratio then
    out(fmt("| instructions per NOTIFY flat in the number of subscriptions (within 10%%) | %s Ir with %s, %s Ir " ..
            "with %s | %s |", thousands(ca.per), thousands(ca.up), thousands(cm.per), thousands(cm.up),
            cg_ratio <= 1.1 and "yes" or "no"))
  end
  out()
end

---------------------------------------------------------------------------
-- 10. Bridging: calls a second through the luasip B2BUA (bench/b2bua.lua:
-- sip.b2bua, media "direct") between SIPp's -sn uac and -sn uas, against
-- SIPp's uac straight into its uas; then N calls with RTP both ways
-- relayed in C by the B2BUA (media "relay": bench/relay_rtp's streams to
-- leg A, SIPp's -rtp_echo behind leg B) against the same streams into
-- SIPp's echo alone; the relay's own latency from a sampled capture on lo

local section_bridging, render_bridging
do
  local RATES = SMOKE and { 50 } or { 250, 500, 1000, 2000, 3000, 4000 }
  local WINDOW = SMOKE and 1.5 or 10   -- seconds of CPU, loss and round trip a step
  local SETTLE = SMOKE and 0.5 or 2    -- seconds between the streams' start and the window
  local IDLE = SMOKE and 0.5 or 2      -- seconds with every call up and no RTP (the idle CPU)
  local CAPTURE = SMOKE and 2 or 5     -- seconds of capture for the relay's latency (whole seconds)
  local CAP_PPS = 4000                 -- captured packets a second at most: 1 sequence number in 2^k
  local PORT_LO, PORT_HI = 10000, 19999  -- the B2BUA's media.ports: apart from free_port's and the ephemeral ones
  local OTHERS_MAX = 0.25              -- others' share of the server's core above which a step runs again

  local function relay_steps()
    if RELAY_STEPS_ARG then
      local t = {}
      for n in RELAY_STEPS_ARG:gmatch("%d+") do t[#t + 1] = tonumber(n) end
      return t
    end
    return SMOKE and { 10 } or { 100, 250, 500, 1000 }
  end

  -- the B2BUA, with its command file; pin: a taskset prefix
  local function start_b2bua(mode, target_port, pin)
    local port = free_port()
    local ctl = fmt("%s/b2bua-ctl-%d", TMP, port)
    writefile(ctl, "")
    local cmd = (pin or "") .. q(LUASIP) .. " " .. q(ROOT .. "/bench/b2bua.lua") .. " " .. port .. " 127.0.0.1:" ..
                target_port .. " --media " .. mode .. " --ports " .. PORT_LO .. "-" .. PORT_HI .. " --ctl " ..
                q(ctl) .. " --parent " .. SELF_PID
    local p = spawn("lua-b2bua-" .. mode, cmd)
    p.port, p.ctl, p.cmds = port, ctl, 0
    local deadline = now() + 10
    while not (readfile(p.out) or ""):find("READY", 1, true) do
      if rc_of(p) or now() > deadline then
        error("bench/b2bua.lua did not start (" .. cmd .. "):\n" .. tail(p.out, 10), 0)
      end
      sleep(0.05)
    end
    return p
  end

  -- a command to the B2BUA, its DONE line as a table
  local function b2bua_command(p, line, timeout)
    p.cmds = p.cmds + 1
    local f = assert(io.open(p.ctl, "a"))
    f:write(line, "\n")
    f:close()
    local pat = "\nDONE " .. p.cmds .. " ([^\n]*)\n"
    local deadline = now() + timeout
    while true do
      local m = (readfile(p.out) or ""):match(pat)
      if m then
        local t = {}
        for k, v in m:gmatch("([%w_]+)=(%S+)") do t[k] = tonumber(v) or v end
        return t
      end
      if rc_of(p) or now() > deadline then
        error("bench/b2bua.lua did not answer '" .. line .. "':\n" .. tail(p.out, 10), 0)
      end
      sleep(0.1)
    end
  end

  -- the first line of a process's output starting with `word`, as a table
  local function line_of(p, word, timeout)
    local deadline = now() + timeout
    while true do
      local l = (readfile(p.out) or ""):match("\n?" .. word .. " ([^\n]*)\n")
      if l then
        local t = {}
        for k, v in l:gmatch("([%w_]+)=(%S+)") do t[k] = tonumber(v) or v end
        return t
      end
      if rc_of(p) or now() > deadline then
        error(p.name .. " printed no " .. word .. " line:\n" .. tail(p.out, 5), 0)
      end
      sleep(0.05)
    end
  end

  -- the kernel's drops (receive buffer full) of every UDP socket bound to
  -- a port in lo..hi (/proc/net/udp)
  local function udp_drops_range(lo, hi)
    local sum = 0
    for line in (readfile("/proc/net/udp") or ""):gmatch("[^\n]+") do
      local p = line:match("^%s*%d+:%s+%x+:(%x+)%s")
      p = p and tonumber(p, 16)
      if p and p >= lo and p <= hi then sum = sum + (tonumber(line:match("(%d+)%s*$")) or 0) end
    end
    return sum
  end

  -- the RTP packets of a pcap file (libpcap format, IPv4/UDP) as
  -- { t, sport, dport, ssrc, seq }; nil and why
  local function read_rtp_seq(path)
    local s = readfile(path)
    if not s or #s < 24 then return nil, "no capture" end
    local e, nano
    for _, en in ipairs{ "<", ">" } do
      local m = string.unpack(en .. "I4", s, 1)
      if m == 0xa1b2c3d4 or m == 0xa1b23c4d then e, nano = en, m == 0xa1b23c4d end
    end
    if not e then return nil, "not a libpcap file" end
    local l2 = ({ [0] = 4, [1] = 14, [113] = 16, [276] = 20, [101] = 0 })[string.unpack(e .. "I4", s, 21)]
    if not l2 then return nil, "unknown link type" end
    local pk, pos = {}, 25
    while pos + 16 <= #s do
      local sec, frac, incl = string.unpack(e .. "I4I4I4", s, pos)
      local p = pos + 16
      pos = p + incl
      local ip = p + l2
      if incl >= l2 + 20 + 8 + 12 and (s:byte(ip) >> 4) == 4 then
        local udp = ip + (s:byte(ip) & 15) * 4
        if udp + 8 + 12 <= p + incl then
          local sport, dport = string.unpack(">I2I2", s, udp)
          local sn, _, ssrc = string.unpack(">I2I4I4", s, udp + 8 + 2)
          pk[#pk + 1] = { t = sec + frac / (nano and 1e9 or 1e6), sport = sport, dport = dport, ssrc = ssrc,
                          seq = sn }
        end
      end
    end
    return pk
  end

  -- the relay's latency from a capture: each sampled packet into leg A
  -- (from the source) against the same packet (SSRC, sequence number) out
  -- of leg B (to SIPp's echo), and the echo into leg B against it out of
  -- leg A (back to the source); aset and bset: the legs' ports
  local function relay_latency(path, aset, bset)
    local pk, why = read_rtp_seq(path)
    if not pk then return nil, why end
    local first = {}
    local function role(p)
      if aset[p.dport] then return "ai" end     -- into leg A
      if bset[p.sport] then return "bo" end     -- out of leg B, A to B
      if bset[p.dport] then return "bi" end     -- into leg B (the echo)
      if aset[p.sport] then return "ao" end     -- out of leg A, B to A
    end
    local seen = 0
    for _, p in ipairs(pk) do
      local r = role(p)
      if r then
        seen = seen + 1
        local k = p.ssrc .. ":" .. p.seq .. ":" .. r
        if not first[k] then first[k] = p.t end   -- a packet seen twice: its first time
      end
    end
    local ab, ba, all, unmatched, negative = {}, {}, {}, 0, 0
    local last_t = pk[#pk] and pk[#pk].t or 0
    for k, t in pairs(first) do
      local base, r = k:match("^(.*):(%a%a)$")
      local out_role = (r == "ai" and "bo") or (r == "bi" and "ao") or nil
      if out_role then
        local o = first[base .. ":" .. out_role]
        if o then
          local d = o - t
          if d < 0 then negative = negative + 1 end
          local list = r == "ai" and ab or ba
          list[#list + 1] = d
          all[#all + 1] = d
        elseif t < last_t - 0.1 then
          unmatched = unmatched + 1             -- not the capture's last moments: lost on the way
        end
      end
    end
    table.sort(ab)
    table.sort(ba)
    table.sort(all)
    return { packets = #pk, seen = seen, n = #all, n_ab = #ab, n_ba = #ba, unmatched = unmatched,
             negative = negative, p50 = percentile(all, 0.5), p99 = percentile(all, 0.99),
             p999 = percentile(all, 0.999), max = all[#all], p99_ab = percentile(ab, 0.99),
             p99_ba = percentile(ba, 0.99), under_1ms = #all > 0 and percentile(all, 0.99) < 0.001 }
  end

  -- 1. one step: `rate` calls a second for STEP s from SIPp's -sn uac,
  -- through a fresh B2BUA into a fresh SIPp -sn uas ("b2bua"), or straight
  -- into it ("direct")
  local function bridge_step(kind, rate)
    local uas = start_sipp_uas("-sn uas", "sipp-uas")
    local b2b = kind == "b2bua" and start_b2bua("direct", uas.port) or nil
    local server = b2b or uas
    sleep(0.2)
    local b0, u0 = b2b and cpu_of(b2b.pid), cpu_of(uas.pid)
    local ud0 = udp_drops(uas.port) or 0
    local calls = math.max(1, math.floor(rate * STEP))
    local r = run_sipp_uac{ scen = "-sn uac", rate = rate, calls = calls, port = server.port, timeout = STEP + 10,
                            server = server }
    local b1, u1 = b2b and cpu_of(b2b.pid), cpu_of(uas.pid)
    if (b2b and not b1) or not u1 then
      error(fmt("bridging: %s died during the %d/s step:\n%s", (b2b and not b1) and "the B2BUA" or "SIPp's uas",
                rate, tail(((b2b and not b1) and b2b or uas).out, 10)), 0)
    end
    r.kind = kind
    r.uas_cpu = u1 - u0
    r.uas_per = r.ok > 0 and r.uas_cpu / r.ok or nil
    r.uas_drops = (udp_drops(uas.port) or 0) - ud0
    if b2b then
      r.b2b_cpu = b1 - b0
      r.b2b_per = r.ok > 0 and r.b2b_cpu / r.ok or nil
      r.b2b_load = r.server_load or r.b2b_cpu / r.elapsed
      r.uas_load = r.uas_cpu / math.max(1e-9, r.elapsed)
      sleep(1.1)                                -- its next STAT line
      r.stat = uas_stat(b2b)
      if (r.stat.failed or 0) > 0 and r.clean then
        r.clean, r.why = false, r.stat.failed .. " failed in the B2BUA"
      end
    else
      r.uas_load = r.server_load or r.uas_cpu / math.max(1e-9, r.elapsed)
    end
    kill(server)
    kill(uas)
    note(fmt("%-22s %6d/s: %-17s %sSIPp uas %s us/call (%s CPU), SIPp uac %s CPU, %d retrans, drops %d/%d/%d",
             kind == "b2bua" and "uac -> B2BUA -> uas" or "uac -> uas", rate, r.why,
             b2b and fmt("B2BUA %s us/call (%s CPU, %s retrans), ", us(r.b2b_per), pct(r.b2b_load),
                         tostring(r.stat.retx or "?")) or "",
             us(r.uas_per), pct(r.uas_load), r.uac_load and pct(r.uac_load) or "?", r.retrans,
             b2b and r.server_drops or 0, r.client_drops, r.uas_drops))
    return r
  end

  -- 2. one try of a step: n calls from SIPp's bench/b2bua_uac.xml, through
  -- a fresh B2BUA relaying their RTP ("relay") into SIPp's -sn uas
  -- -rtp_echo, or straight into it ("direct"); bench/relay_rtp sends a
  -- stream a call and reads what comes back
  local function relay_try(kind, n, dumpcap)
    local relay = kind == "relay"
    local label = fmt("%s, %d calls", relay and "relay" or "direct", n)
    -- SIPp's echo runs on the server's core when it is the server, else
    -- with the load (the caller, the source, the capture)
    local uas_port, mport = free_port(), free_ports(4)
    local uas = spawn("sipp-echo", (relay and PIN_LOAD or PIN_SERVER) .. "sipp -nostdin -i 127.0.0.1 -p " ..
                      uas_port .. " -mi 127.0.0.1 -mp " .. mport .. " -rtp_echo -sn uas -timeout 600 " .. SIPP_BUF)
    uas.port = uas_port
    sleep(0.4)
    if rc_of(uas) then error("SIPp's echo UAS did not start:\n" .. tail(uas.out, 10), 0) end
    local b2b = relay and start_b2bua("relay", uas_port, PIN_SERVER) or nil
    local server = b2b or uas
    local rate = math.min(250, math.max(10, n // 4))
    local ramp = n / rate
    local hold = ramp + IDLE + SETTLE + WINDOW + CAPTURE + 40
    local lport, cmport = free_port(), free_ports(4)
    local uac = spawn("sipp-relay-uac", PIN_LOAD .. table.concat({
      "sipp -nostdin -i 127.0.0.1 -p", lport, "-mi 127.0.0.1 -mp", cmport, "-sf", q(ROOT .. "/bench/b2bua_uac.xml"),
      "-key rtp_port", free_port(), SIPP_BUF, "-r", rate, "-rp 1000", "-m", n, "-l", n,
      "-d", math.floor(hold * 1000), "-timeout", fmt("%ds", math.ceil(hold + 30)),
      "-trace_stat -stf", q(fmt("%s/sipp-relay-%d.csv", TMP, lport)), "-fd 1", "127.0.0.1:" .. server.port }, " "))
    uac.csv = fmt("%s/sipp-relay-%d.csv", TMP, lport)
    local r = { kind = kind, n = n, rate = rate }
    -- every call up: bridged (the B2BUA says so, with its ports), or all
    -- created and a second for the last answers
    local aports, aset, bset = {}, {}, {}
    local deadline = now() + ramp + 20
    while now() < deadline do
      if relay then
        local k = 0
        for _ in (readfile(b2b.out) or ""):gmatch("BRIDGED ") do k = k + 1 end
        if k >= n then break end
      elseif csv_num(last_csv(uac), "TotalCallCreated") >= n then
        sleep(1)
        break
      end
      if rc_of(uac) or not alive(server.pid) or not alive(uas.pid) then break end
      sleep(0.2)
    end
    if relay then
      for a, b in (readfile(b2b.out) or ""):gmatch("BRIDGED a=(%d+) b=(%d+)") do
        aports[#aports + 1] = tonumber(a)
        aset[tonumber(a)], bset[tonumber(b)] = true, true
      end
      r.up = #aports
    else
      local c = last_csv(uac)
      r.up = csv_num(c, "TotalCallCreated") - csv_num(c, "FailedCall(C)")
    end
    if r.up == 0 then
      error(fmt("bridging (%s): no call came up:\n%s", label, tail((b2b or uac).out, 10)), 0)
    end
    -- the idle CPU: every call up, no RTP yet
    local i0, it = cpu_of(server.pid), now()
    sleep(IDLE)
    local i1 = cpu_of(server.pid)
    r.idle_load = i0 and i1 and (i1 - i0) / (now() - it) or nil
    -- the streams: to each call's leg A, or all to SIPp's echo port
    local dests = {}
    for i = 1, relay and #aports or r.up do dests[i] = relay and aports[i] or mport end
    local pf = fmt("%s/relay-ports-%s-%d", TMP, kind, n)
    writefile(pf, table.concat(dests, "\n") .. "\n")
    -- the kernel's drops on the B2BUA's sockets and on the echo's, from
    -- before the first packet to after the last
    local d0, e0 = udp_drops_range(PORT_LO, PORT_HI), udp_drops(mport) or 0
    local src = spawn("relay-rtp", PIN_LOAD .. q(TMP .. "/relay_rtp") .. " " .. q(pf))
    line_of(src, "READY", 10)
    sleep(SETTLE)
    -- the kernel's softirq threads: loopback delivery deferred to them
    -- (ksoftirqd/N) runs after a packet's capture point and before it
    -- reaches its socket
    local sirq = { tonumber(sh("pgrep -x ksoftirqd/0")), tonumber(sh("pgrep -x ksoftirqd/1")) }
    local function snap()
      local s = { t = now() }
      s.srv, s.sys = cpu_of(server.pid)
      s.uas, s.src, s.uac = cpu_of(uas.pid), cpu_of(src.pid), cpu_of(uac.pid)
      s.busy, s.jiffies = cpu_jiffies(PIN and 1 or 0)
      s.drops = udp_drops_range(PORT_LO, PORT_HI)
      s.echo_drops = udp_drops(mport) or 0
      s.sirq = { cpu_of(sirq[1]), cpu_of(sirq[2]) }
      return s
    end
    -- the share of a core a process (or the others on the server's core,
    -- or a ksoftirqd) took between two snapshots
    local function shares(a, b)
      local w = b.t - a.t
      local x = { wall = w, sirq = {} }
      x.server = a.srv and b.srv and (b.srv - a.srv) / w
      x.others = a.busy and b.busy and b.jiffies > a.jiffies and x.server and
                 math.max(0, (b.busy - a.busy) / (b.jiffies - a.jiffies) - x.server) or nil
      for i = 1, 2 do x.sirq[i] = a.sirq[i] and b.sirq[i] and (b.sirq[i] - a.sirq[i]) / w end
      return x
    end
    local a = snap()
    os.execute("kill -USR1 " .. src.pid)
    sleep(WINDOW)
    os.execute("kill -USR2 " .. src.pid)
    local b = snap()
    r.rx = line_of(src, "RESULT", 10)
    -- the relay's latency: a sampled capture, after the window (a tap on
    -- lo costs every sender a copy of each packet: not in the CPU figures)
    if relay and dumpcap then
      local mask = 1
      while n * 50 * 4 / mask > CAP_PPS do mask = mask * 2 end
      local filter = fmt("udp and udp[8] & 0xc0 == 0x80 and udp[9] & 0x7f == 0 and udp[10:2] & %d == 0", mask - 1)
      local capf = fmt("%s/relay-%d.pcap", TMP, n)
      local cap = spawn("dumpcap", PIN_LOAD .. "dumpcap -i lo -P -q -s 64 -B 64 -f " .. q(filter) ..
                        " -a duration:" .. CAPTURE .. " -w " .. q(capf))
      local c0 = snap()
      if not wait_proc(cap, CAPTURE + 15) then kill(cap) end
      local cw = shares(c0, snap())
      local cs = readfile(cap.out) or ""
      local got, drop = cs:match("received/dropped on interface.-: (%d+)/(%d+)")
      local lat, why = relay_latency(capf, aset, bset)
      r.lat = lat or { na = why .. ": " .. tail(cap.out, 2) }
      r.lat.mask, r.lat.cap_received, r.lat.cap_drops = mask, tonumber(got), tonumber(drop)
      r.lat.others, r.lat.sirq = cw.others, cw.sirq
    end
    -- the end: the source stops, reads what was on its way and sums up;
    -- then the B2BUA's counts (every packet since the streams started)
    os.execute("kill -TERM " .. src.pid)
    r.total = line_of(src, "TOTAL", 10)
    if relay then r.legs = b2bua_command(b2b, "stats", 10) end
    r.drops_total = udp_drops_range(PORT_LO, PORT_HI) - d0
    r.echo_drops_total = (udp_drops(mport) or 0) - e0
    r.stat = b2b and uas_stat(b2b) or {}
    kill(uac)
    if b2b then kill(b2b) end
    kill(uas)
    kill(src)
    if not (a.srv and b.srv) then
      error(fmt("bridging (%s): the %s died:\n%s", label, relay and "B2BUA" or "SIPp echo", tail(server.out, 10)), 0)
    end
    local wall = b.t - a.t
    local sh_w = shares(a, b)
    r.window = r.rx.window or wall
    r.server_cpu = b.srv - a.srv
    r.server_load = r.server_cpu / wall
    r.sys_share = r.server_cpu > 0 and (b.sys - a.sys) / r.server_cpu or nil
    r.echo_load = relay and a.uas and b.uas and (b.uas - a.uas) / wall or r.server_load
    r.src_load = a.src and b.src and (b.src - a.src) / wall or nil
    r.uac_load = a.uac and b.uac and (b.uac - a.uac) / wall or nil
    r.others, r.sirq = sh_w.others, sh_w.sirq
    r.drops = b.drops - a.drops
    r.echo_drops = b.echo_drops - a.echo_drops
    r.streams = r.rx.returning or 0
    -- a call: a stream each way; the B2BUA relays both, the echo one
    r.per_call = r.streams > 0 and r.server_cpu / (r.streams * r.window) or nil
    r.per_stream = r.per_call and (relay and r.per_call / 2 or r.per_call)
    -- where the packets went missing, over the streams' whole life: in
    -- the B2BUA (its sockets' drops, or received and not relayed), in
    -- SIPp's echo (its socket's drops), at the source (its sockets')
    local t, g = r.total, r.legs or {}
    r.lost_total = (t.sent or 0) - (t.received or 0)
    if relay then
      r.lost_b2bua = r.drops_total + math.max(0, (g.a_packets_received or 0) - (g.a_relayed or 0)) +
                     math.max(0, (g.b_packets_received or 0) - (g.b_relayed or 0))
    end
    -- clean: every stream up and nothing lost in the process measured
    -- (behind the B2BUA, SIPp's echo shares its core with the load and
    -- may drop: that is the load generator's, shown apart)
    r.complete = r.up >= n and r.streams >= n
    if relay then
      r.clean = r.complete and r.lost_b2bua == 0
    else
      r.clean = r.complete and r.lost_total == 0 and (r.rx.lost or 0) == 0
    end
    r.why = (not r.complete and fmt("%d of %d streams", r.streams, n)) or
            (relay and r.lost_b2bua > 0 and fmt("%d lost in it", r.lost_b2bua)) or
            (r.lost_total > 0 and fmt(relay and "%d lost behind it" or "%d lost", r.lost_total)) or
            ((r.rx.lost or 0) > 0 and fmt("%d lost", r.rx.lost)) or "no loss"
    local l = r.lat
    note(fmt("%-8s %5d calls: %-18s %s CPU (%s sys, idle %s): %s us/s a stream, round trip p50 %.3f p99 %.3f " ..
             "max %.3f ms, window: sent %d, back %d, lost %d; in all: sent %d, back %d, drops (B2BUA / echo / " ..
             "source) %d/%d/%d; echo %s, source %s (late sends %d), others on the server's core %s, ksoftirqd " ..
             "%s/%s%s",
             kind, n, r.why, pct(r.server_load), r.sys_share and pct(r.sys_share) or "?",
             r.idle_load and pct(r.idle_load) or "?", us(r.per_stream), (r.rx.rtt_p50_us or 0) / 1000,
             (r.rx.rtt_p99_us or 0) / 1000, (r.rx.rtt_max_us or 0) / 1000, r.rx.sent or 0, r.rx.received or 0,
             r.rx.lost or 0, t.sent or 0, t.received or 0, r.drops_total, r.echo_drops_total, t.drops or 0,
             pct(r.echo_load), r.src_load and pct(r.src_load) or "?", r.rx.late_sends or 0,
             r.others and pct(r.others) or "?", r.sirq[1] and pct(r.sirq[1]) or "?",
             r.sirq[2] and pct(r.sirq[2]) or "?",
             (l and l.n) and fmt("; relay latency p50 %.3f p99 %.3f max %.3f ms over %d samples (1 in %d, %d " ..
                                 "unmatched, capture dropped %s, others on the B2BUA's core %s)", (l.p50 or 0) * 1e3,
                                 (l.p99 or 0) * 1e3, (l.max or 0) * 1e3, l.n, l.mask, l.unmatched,
                                 tostring(l.cap_drops), l.others and pct(l.others) or "?")
                                or (l and ("; latency: " .. tostring(l.na)) or "")))
    return r
  end

  -- a step; when other processes took more than a quarter of the
  -- server's core in its window or in its capture (the machine is
  -- shared), it runs again, once, and the try with the least is kept
  local function relay_step(kind, n, dumpcap)
    local best
    for try = 1, SMOKE and 1 or 2 do
      local r = relay_try(kind, n, dumpcap)
      r.tries = try
      -- over the window, and over the capture
      r.others_max = math.max(r.others or 0, r.lat and r.lat.others or 0)
      if not best or r.others_max < best.others_max then best = r end
      if r.others_max <= OTHERS_MAX then break end
      if try < 2 and not SMOKE then
        note(fmt("other processes took %s of the server's core: again", pct(r.others_max)))
      end
    end
    return best
  end

  function section_bridging()
    note("10. bridging: SIPp uac -> luasip B2BUA -> SIPp uas against SIPp uac -> SIPp uas, rate by rate; " ..
         "RTP relayed by the B2BUA against SIPp's echo alone")
    local B = { calls = { b2bua = { steps = {}, top = RATES[#RATES] }, direct = { steps = {}, top = RATES[#RATES] } },
                relay = { steps = {} }, direct = { steps = {} }, list = relay_steps() }
    for _, rate in ipairs(RATES) do
      for _, kind in ipairs{ "b2bua", "direct" } do
        local l = B.calls[kind]
        if not l.stopped then
          local r = bridge_step(kind, rate)
          l.steps[#l.steps + 1] = r
          if r.clean then l.best = r else l.stopped = true end
        end
      end
    end
    -- the relay: a C source and sink of its own (bench/relay_rtp.c)
    if not have("cc") then
      B.na = "no C compiler for bench/relay_rtp.c"
    elseif os.execute(fmt("cc -O2 -Wall -o %s %s >%s 2>&1", q(TMP .. "/relay_rtp"), q(ROOT .. "/bench/relay_rtp.c"),
                          q(TMP .. "/relay-cc.log"))) ~= true then
      B.na = "bench/relay_rtp.c did not build: " .. tail(TMP .. "/relay-cc.log", 3)
    end
    if B.na then
      note("bridging: the RTP relay is not available (" .. B.na .. ")")
      R.bridging = B
      return
    end
    local dumpcap = have("dumpcap")
    if not dumpcap then B.lat_na = "no dumpcap (wireshark's capture tool)" end
    -- sockets: 4 a call in the B2BUA (RTP and RTCP, two legs), 1 a call in the source
    local nofile = tonumber(sh("ulimit -n")) or 1024
    for _, n in ipairs(B.list) do
      if 4 * n + 256 > nofile then
        note(fmt("bridging: %d calls need %d file descriptors in the B2BUA (ulimit -n is %d): not run", n,
                 4 * n + 256, nofile))
        B.skipped = (B.skipped and (B.skipped .. ", ") or "") .. n
      else
        for _, kind in ipairs{ "relay", "direct" } do
          local l = B[kind]
          if not l.stopped then
            local r = relay_step(kind, n, dumpcap)
            l.steps[#l.steps + 1] = r
            if r.clean then l.best = r end
            if not r.complete or r.server_load >= 0.95 then l.stopped = true end
          end
        end
      end
    end
    if B.lat_na == nil and dumpcap then
      for _, r in ipairs(B.relay.steps) do
        if r.lat and r.lat.na then B.lat_na = r.lat.na end
      end
    end
    R.bridging = B
  end

  local function ms3(x) return x and fmt("%.3f", x) or "-" end

  function render_bridging(M0, load_end)
    local B = R.bridging
    out("## 10. Bridging: the luasip B2BUA between SIPp's caller and callee")
    out()
    out(fmt("Measured at commit %s%s, %s, load average %s at the start of the run and %s at the end.", M0.commit,
            M0.dirty and " (with uncommitted changes)" or "", M0.date, M0.load, load_end))
    out()
    if not B then
      out("Not available: the section did not run.")
      out()
      return
    end
    out("The machine was shared: other engineers' builds and test suites ran on both cores during the run " ..
        "(see the load averages), so single figures move from run to run; what compares two set-ups was " ..
        "measured in the same run, one right after the other.")
    out()
    out(fmt("**Bridged calls a second.** SIPp `-sn uac` places %g s of calls at the rate into bench/b2bua.lua, " ..
            "whose INVITE handler is `sip.b2bua(call, \"sip:b2bua@<SIPp uas>\", { media = \"direct\" })`: the B " ..
            "leg placed to SIPp `-sn uas` with A's offer, A answered with B's answer when B answers, the legs " ..
            "bridged until the BYE (from A), which the B2BUA passes on to B; no RTP (the UA has no media " ..
            "settings, SDP passes through). Twelve SIP messages a call go through the B2BUA (each leg's INVITE, " ..
            "180, 200, ACK, BYE, 200), against six at a UAS. The reference is SIPp's uac straight into SIPp's " ..
            "uas, rate by rate, right after. Each step: a fresh B2BUA and uas; section 1's rules (clean: SIPp " ..
            "exited 0, every call successful, 90%% of the rate reached, and no call failed in the B2BUA). CPU " ..
            "per call: utime+stime over the step / calls completed, for the B2BUA and for SIPp's uas (behind " ..
            "the B2BUA, and alone); the B2BUA's transactions end 32 s later (Timers J and L), outside the step, " ..
            "as in section 1. \"CPU\" is the share of a core while calls were being created (the B2BUA's, " ..
            "sampled; the uas's, over the step).", STEP))
    out()
    out("| rate (cps) | uac → B2BUA → uas | B2BUA CPU/call (us) | B2BUA CPU | uas CPU/call (us) | retrans " ..
        "(SIPp / B2BUA) | drops (B2BUA / uac / uas) | uac → uas | uas CPU/call (us) | uas CPU | retrans | " ..
        "drops (uas / uac) | SIPp uac CPU (via B2BUA / direct) |")
    out("|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    local C = B.calls
    for _, rate in ipairs(RATES) do
      local a, d = step_at(C.b2bua, rate), step_at(C.direct, rate)
      if a or d then
        local ac = a and { a.clean and "0 failed" or a.why, us(a.b2b_per), pct(a.b2b_load), us(a.uas_per),
                           fmt("%d / %s", a.retrans, tostring(a.stat.retx or "-")),
                           fmt("%d / %d / %d", a.server_drops, a.client_drops, a.uas_drops) } or
                   { "-", "-", "-", "-", "-", "-" }
        local dc = d and { d.clean and "0 failed" or d.why, us(d.uas_per), pct(d.uas_load), tostring(d.retrans),
                           fmt("%d / %d", d.uas_drops, d.client_drops) } or { "-", "-", "-", "-", "-" }
        out(fmt("| %d | %s | %s | %s / %s |", rate, table.concat(ac, " | "), table.concat(dc, " | "),
                a and a.uac_load and pct(a.uac_load) or "-", d and d.uac_load and pct(d.uac_load) or "-"))
      end
    end
    out()
    local common
    for _, a in ipairs(C.b2bua.steps) do
      local d = step_at(C.direct, a.rate)
      if a.clean and d and d.clean then common = a.rate end
    end
    local ca, cd = common and step_at(C.b2bua, common), common and step_at(C.direct, common)
    B.common = common
    out(fmt("**Highest rate with 0 failed calls: through the B2BUA %s cps, SIPp uac into SIPp uas %s cps.**",
            best_of(C.b2bua), best_of(C.direct)))
    if ca and cd and ca.b2b_per and cd.uas_per then
      out(fmt("**At %d cps the B2BUA takes %s us of CPU per bridged call, SIPp's uas %s us per call it answers " ..
              "(alone; %s us behind the B2BUA): the middle costs %.1f times the far end.**", common,
              us(ca.b2b_per), us(cd.uas_per), us(ca.uas_per), ca.b2b_per / cd.uas_per))
    end
    out()
    if B.na then
      out("RTP relay: not available (" .. B.na .. ").")
      out()
      return
    end
    out(fmt("**RTP relayed.** N calls from SIPp's bench/b2bua_uac.xml (N/4 a second, at most 250; held, no RTP " ..
            "of SIPp's own) into bench/b2bua.lua with `media = \"relay\"` (`sip.ua{ media = { ports = \"%d-%d\", " ..
            "codecs = { \"PCMU\" } } }`: each leg negotiates PCMU with the B2BUA, whose C core passes each " ..
            "packet received on one leg's socket out of the other's, as it came), the B legs to SIPp `-sn uas " ..
            "-rtp_echo` (SIPp sends back whatever reaches its media port, to where it came from). Once every call " ..
            "is bridged (and %g s with no RTP, the idle CPU), bench/relay_rtp.c sends a stream a call: 172-byte " ..
            "PCMU packets every 20 ms from a socket of its own to the call's leg A, the calls' 20 ms phases " ..
            "spread evenly (it wakes every millisecond and sends the packets due, N/20 of them: calls placed at " ..
            "random moments, not one burst of N), and reads what comes back. A call thus carries two streams " ..
            "through the B2BUA, A to B and the echo B to A: 100 packets a second relayed. The reference: the same " ..
            "calls from SIPp's caller straight into SIPp's echo, the same streams to its media port, echoed " ..
            "once. %g s after the streams started, a window of %g s: CPU per stream is the process's utime+stime " ..
            "over it / (streams x seconds), in microseconds of CPU per second of a 50-packet stream (a stream " ..
            "is one packet in and one out every 20 ms: two a call for the B2BUA, one for the echo); \"a core per " ..
            "100 calls\" is the B2BUA's CPU for 100 calls. The round trip is from the source's send time (in the " ..
            "packet) to the kernel's receive timestamp of the packet back (SO_TIMESTAMPNS); lost: sequence numbers " ..
            "missing from what came back.", PORT_LO, PORT_HI, IDLE, SETTLE, WINDOW))
    out()
    out(fmt("The machine has %d cores: %s On loopback the receiving side's network stack (UDP queueing, the " ..
            "wake-up) runs inside the sender's sendto(), so the B2BUA's CPU holds the delivery of what it sends " ..
            "to SIPp's echo and to the source, and the echo's (alone) the delivery back to the source. A step " ..
            "where other processes took more than a quarter of the server's core (over the window or the " ..
            "capture) runs again, once, and the try with the least of them is kept.", NPROC,
            PIN and "the B2BUA (or, in the reference, SIPp's echo) is pinned to CPU 1, the caller, the source, " ..
            "SIPp's echo behind the B2BUA and the capture to CPU 0 (taskset)." or
            "nothing is pinned (no taskset or a single core)."))
    out()
    out("| calls | relayed by the B2BUA | B2BUA CPU/stream (us/s) | a core per 100 calls | B2BUA CPU (sys) " ..
        "| idle | round trip p50 / p99 / max (ms) | lost / sent (window) | SIPp echo behind it | SIPp echo alone " ..
        "| echo CPU/stream (us/s) | echo CPU (sys) | idle | round trip p50 / p99 / max (ms) | lost / sent " ..
        "| source / others on the server's core (relay ; alone) |")
    out("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    local function at(l, n)
      for _, s in ipairs(l.steps) do if s.n == n then return s end end
    end
    local function rtt(s)
      local x = s.rx
      return fmt("%s / %s / %s", ms3((x.rtt_p50_us or 0) / 1000), ms3((x.rtt_p99_us or 0) / 1000),
                 ms3((x.rtt_max_us or 0) / 1000))
    end
    local function loads(s)
      if not s then return "-" end
      return (s.src_load and pct(s.src_load) or "?") .. " / " .. (s.others and pct(s.others) or "?")
    end
    for _, n in ipairs(B.list) do
      local a, d = at(B.relay, n), at(B.direct, n)
      if a or d then
        local ac = a and { a.clean and "no loss" or a.why, us(a.per_stream),
                           a.per_call and pct(a.per_call * 100) or "-",
                           pct(a.server_load) .. (a.sys_share and (" (" .. pct(a.sys_share) .. ")") or ""),
                           a.idle_load and pct(a.idle_load) or "-", rtt(a),
                           fmt("%s / %s", thousands(a.rx.lost or 0), thousands(a.rx.sent or 0)), pct(a.echo_load) } or
                   { "-", "-", "-", "-", "-", "-", "-", "-" }
        local dc = d and { d.clean and "no loss" or d.why, us(d.per_stream),
                           pct(d.server_load) .. (d.sys_share and (" (" .. pct(d.sys_share) .. ")") or ""),
                           d.idle_load and pct(d.idle_load) or "-", rtt(d),
                           fmt("%s / %s", thousands(d.rx.lost or 0), thousands(d.rx.sent or 0)) } or
                   { "-", "-", "-", "-", "-", "-" }
        out(fmt("| %d | %s | %s | %s ; %s |", n, table.concat(ac, " | "), table.concat(dc, " | "), loads(a), loads(d)))
      end
    end
    out()
    local top
    for _, n in ipairs(B.list) do
      local a, d = at(B.relay, n), at(B.direct, n)
      if a and d and a.complete and d.complete then top = n end
    end
    if top then
      local a, d = at(B.relay, top), at(B.direct, top)
      out(fmt("**%d relayed calls (%d streams): the B2BUA %s us/s a stream, %s of a core for 100 calls " ..
              "(%s in all); the same streams echoed by SIPp alone: %s us/s a stream (ratio %s).**", top, 2 * top,
              us(a.per_stream), pct(a.per_call * 100), pct(a.server_load), us(d.per_stream),
              (d.per_stream or 0) > 0 and fmt("%.2f", a.per_stream / d.per_stream) or "-"))
      out()
    end
    -- where the packets went, over the streams' whole life
    out("Packets relayed against packets sent, over the streams' whole life (from the first packet; at the end " ..
        "the source stops, reads for 0.5 s what is still on its way and counts; the B2BUA then sums " ..
        "`call.media:stats()` over its legs): into legs A (`packets_received`), relayed A to B (`relayed`), " ..
        "the echo into legs B, relayed B to A, back at the source. Lost in the B2BUA: its sockets' " ..
        "receive-buffer drops (the kernel's count, /proc/net/udp, every socket in its media ports) and what it " ..
        "received and did not relay (`relay_dropped`, send errors); the other drops are the echo's socket and " ..
        "the source's. The echo behind the B2BUA shares its core with the caller, the source and the capture: " ..
        "its drops are the load generator's.")
    out()
    out("| calls | sent by the source | into legs A | relayed A → B | into legs B (echo) | relayed B → A | back at " ..
        "the source | lost, end to end | lost in the B2BUA | drops: echo / source sockets | SIPp echo alone: " ..
        "sent / back / echo drops |")
    out("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for _, n in ipairs(B.list) do
      local a, d = at(B.relay, n), at(B.direct, n)
      if a or d then
        local t, g = a and a.total or {}, a and a.legs or {}
        out(fmt("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |", n,
                a and thousands(t.sent or 0) or "-", a and thousands(g.a_packets_received or 0) or "-",
                a and thousands(g.a_relayed or 0) or "-", a and thousands(g.b_packets_received or 0) or "-",
                a and thousands(g.b_relayed or 0) or "-", a and thousands(t.received or 0) or "-",
                a and thousands(a.lost_total) or "-", a and thousands(a.lost_b2bua) or "-",
                a and fmt("%s / %s", thousands(a.echo_drops_total), thousands(t.drops or 0)) or "-",
                d and fmt("%s / %s / %s", thousands(d.total.sent or 0), thousands(d.total.received or 0),
                          thousands(d.echo_drops_total)) or "-"))
      end
    end
    out()
    -- the relay's latency
    local with_lat = {}
    for _, r in ipairs(B.relay.steps) do
      if r.lat and r.lat.n then with_lat[#with_lat + 1] = r end
    end
    if #with_lat > 0 then
      out(fmt("**The relay's latency**: from a packet's arrival at the B2BUA's leg A socket to its departure from " ..
              "leg B's (and the echo's, from leg B to leg A). After the window, dumpcap captures on lo for %d s " ..
              "(pinned with the load), with a BPF filter that keeps RTP (version 2, PCMU) whose sequence number " ..
              "is a multiple of 2^k, about %s packets a second at most: the relay keeps SSRC and sequence " ..
              "number, so each sampled packet is seen four times (source to leg A, leg B to the echo, the echo " ..
              "to leg B, leg A to the source) and matched by SSRC, sequence number and the legs' ports (the " ..
              "B2BUA prints them). On loopback a packet's capture timestamp is taken inside its sender's " ..
              "sendto(), as it is handed to the loopback device; it reaches the receiving socket right after, " ..
              "in the same call, unless the kernel defers that delivery to the ksoftirqd thread of the " ..
              "sender's CPU (their CPU is in the table). So the difference is the wait in the B2BUA's socket, " ..
              "its loop's wake-up and the relay, up to its own sendto(). Capture timestamps are in " ..
              "microseconds. The capture is not in the CPU window: a tap on lo costs every sender a copy of " ..
              "each packet.",
              CAPTURE, thousands(CAP_PPS)))
      out()
      out("| calls | sampled | samples (A → B / B → A) | unmatched | captured / dropped by the capture " ..
          "| latency p50 / p99 / p99.9 / max (ms) | p99 A → B / B → A (ms) | p99 under 1 ms " ..
          "| others on the B2BUA's core / ksoftirqd/0 / ksoftirqd/1 |")
      out("|---:|---:|---:|---:|---:|---:|---:|---|---:|")
      for _, r in ipairs(with_lat) do
        local l = r.lat
        local function p(x) return x and pct(x) or "?" end
        out(fmt("| %d | 1 in %d | %s (%s / %s) | %d | %s / %s | %s / %s / %s / %s | %s / %s | %s | %s / %s / %s |",
                r.n, l.mask, thousands(l.n), thousands(l.n_ab), thousands(l.n_ba), l.unmatched,
                l.cap_received and thousands(l.cap_received) or "?", l.cap_drops and thousands(l.cap_drops) or "?",
                ms3(l.p50 and l.p50 * 1e3), ms3(l.p99 and l.p99 * 1e3), ms3(l.p999 and l.p999 * 1e3),
                ms3(l.max and l.max * 1e3), ms3(l.p99_ab and l.p99_ab * 1e3), ms3(l.p99_ba and l.p99_ba * 1e3),
                l.under_1ms and "yes" or "no", p(l.others), p(l.sirq and l.sirq[1]), p(l.sirq and l.sirq[2])))
      end
      out()
    elseif B.lat_na then
      out("The relay's latency: not available (" .. tostring(B.lat_na) .. ").")
      out()
    end
    -- against the brief's targets
    out("| target | figure | met |")
    out("|---|---|---|")
    out(fmt("| bridged calls with 0 failed | highest clean: %s cps through the B2BUA (SIPp uac into uas: %s)%s | - |",
            best_of(C.b2bua), best_of(C.direct),
            ca and fmt("; %s us per bridged call at %d cps against %s us at SIPp's uas", us(ca.b2b_per), common,
                       us(cd.uas_per)) or ""))
    local lost, relayed, all_clean = 0, 0, #B.relay.steps > 0
    for _, r in ipairs(B.relay.steps) do
      lost = lost + (r.lost_b2bua or 0)
      relayed = relayed + ((r.legs or {}).a_relayed or 0) + ((r.legs or {}).b_relayed or 0)
      if not r.clean then all_clean = false end
    end
    out(fmt("| no loss in the relay | %s lost in the B2BUA, %s packets relayed, up to %s calls | %s |",
            thousands(lost), thousands(relayed),
            B.relay.steps[#B.relay.steps] and B.relay.steps[#B.relay.steps].n or "-", all_clean and "yes" or "no"))
    if #with_lat > 0 then
      local worst, all_under = nil, true
      for _, r in ipairs(with_lat) do
        if not worst or (r.lat.p99 or 0) > (worst.lat.p99 or 0) then worst = r end
        if not r.lat.under_1ms then all_under = false end
      end
      out(fmt("| relay latency p99 under 1 ms | worst p99 %s ms (%d calls, max %s ms) | %s |",
              ms3(worst.lat.p99 and worst.lat.p99 * 1e3), worst.n, ms3(worst.lat.max and worst.lat.max * 1e3),
              all_under and "yes" or "no"))
    end
    if B.skipped then
      out(fmt("| (not run: %s calls; ulimit -n too low) | | |", B.skipped))
    end
    out()
  end
end

---------------------------------------------------------------------------
-- The machine, and the summary against the targets of issue 7

local function machine()
  local cpuinfo = readfile("/proc/cpuinfo") or ""
  local model = cpuinfo:match("model name%s*:%s*([^\n]+)") or cpuinfo:match("Model%s*:%s*([^\n]+)") or "?"
  local mem = tonumber((readfile("/proc/meminfo") or ""):match("MemTotal:%s*(%d+)")) or 0
  return {
    nproc = sh("nproc"), model = model, mem = fmt("%.1f GiB", mem / 1048576),
    kernel = sh("uname -r"), date = os.date("!%Y-%m-%d %H:%M UTC"),
    commit = sh("git -C " .. q(ROOT) .. " rev-parse --short HEAD"),
    dirty = sh("git -C " .. q(ROOT) .. " status --porcelain --untracked-files=no") ~= "",
    sipp = sh("sipp -v | grep -i 'sipp v' | head -1"):gsub("^%s+", ""),
    lua = sh("lua5.4 -v"),
    valgrind = sh("valgrind --version"),
    load = (readfile("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)") or "?",
  }
end

local function render_header(m, load_end, secs)
  out("# luasip benchmark results")
  out()
  out("Written by `make bench` (bench/run.lua); bench/README.md says how to read it. Every figure is " ..
      "side by side with SIPp's own, on loopback, same machine, same run.")
  out()
  out("| | |")
  out("|---|---|")
  out("| date | " .. m.date .. " |")
  out("| commit | " .. m.commit .. (m.dirty and " (with uncommitted changes)" or "") .. " |")
  out("| machine | " .. m.nproc .. " CPU(s), " .. m.model .. ", " .. m.mem .. " RAM, Linux " ..
      m.kernel .. " |")
  out("| versions | " .. m.sipp .. "; " .. m.lua .. "; " .. m.valgrind .. " |")
  out("| load average | " .. m.load .. " at start, " .. load_end .. " at the end |")
  out("| run time | " .. fmt("%.0f s", secs) .. " |")
  out()
  out("Noise: the machine has " .. m.nproc .. " cores shared by the server, SIPp and, during this run, " ..
      "other engineers' test suites (see the load average), so CPU figures can move by 10-20% from run " ..
      "to run; the callgrind instruction counts do not. CPU time is utime+stime from /proc/PID/stat " ..
      "(" .. CLK_TCK .. " ticks a second).")
  out()
end

local function render_summary()
  out("## Against the targets of issue 7")
  out()
  out("| target | figure | met |")
  out("|---|---|---|")
  local l, s = R.lua_uas, R.sipp_uas
  local cr = R.common_rate
  if cr then
    local a, b = step_at(l, cr), step_at(s, cr)
    out(fmt("| Lua UAS CPU/call <= SIPp UAS CPU/call, same rate | %s us vs %s us at %d cps | %s |",
            us(a.server_per), us(b.server_per), cr, a.server_per <= b.server_per and "yes" or "no"))
  end
  local best = l.best and l.best.rate or 0
  out(fmt("| 0 failed calls at 3000 cps and above | highest clean: %s cps (SIPp UAS: %s) | %s |",
          best_of(l), best_of(s), best >= 3000 and "yes" or "no"))
  local sc = R.scale
  if sc then
    local ratio = sc.lua_long.server_per / sc.lua_short.server_per
    out(fmt("| CPU/call at 20,000 concurrent <= 1.3 x short calls | %.2f x (%d concurrent) | %s |", ratio,
            sc.lua_long.concurrent, ratio <= 1.3 and "yes" or "no"))
  end
  local per = lua_rss_per_call(sc)
  if per then
    out(fmt("| <= 8 KiB RSS per concurrent call | %.1f KiB | %s |", per, per <= 8 and "yes" or "no"))
  end
  if R.cg and R.cg.available then
    out(fmt("| instructions per call: tracked | %s Ir | - |", thousands(R.cg.per_call)))
  end
  out()
end

local function render_optimisations()
  out("## What each optimisation bought")
  out()
  out("Kept in bench/OPTIMISATIONS.md (a table, one row per change: the figure before and after, " ..
      "from two runs of `make bench`, or of the callgrind section alone for instruction counts, which " ..
      "are repeatable) and copied here by every run.")
  out()
  local t = readfile(ROOT .. "/bench/OPTIMISATIONS.md")
  if t and t:match("%S") then
    for line in (t:gsub("%s+$", "") .. "\n"):gmatch("([^\n]*)\n") do out(line) end
  else
    out("| change (commit) | figure | before | after | note |")
    out("|---|---|---:|---:|---|")
    out("| | | | | |")
  end
  out()
end

---------------------------------------------------------------------------
-- Main

local started = now()
local M = machine()
print(fmt("luasip bench%s: commit %s, %s CPU(s), load %s; logs in %s", SMOKE and " (smoke)" or "", M.commit,
          M.nproc, M.load, TMP))
for _, prog in ipairs{ "sipp" } do
  if not have(prog) then
    io.stderr:write("bench/run.lua: " .. prog .. " is not installed (make deps)\n")
    os.exit(1)
  end
end
if not readfile(ROOT .. "/sip/core.so") then
  io.stderr:write("bench/run.lua: sip/core.so is missing: make build\n")
  os.exit(1)
end

-- the sections --only can run alone: how to run and render each, and the
-- heading of its part of RESULTS.md
local SECTIONS = {
  media = { run = function() section_media() end, render = function(...) render_media(...) end,
            num = 6, head = "\n## 6%. Media[^\n]*\n" },
  dtmf = { run = function() section_dtmf() end, render = function(...) render_dtmf(...) end,
           num = 7, head = "\n## 7%. DTMF[^\n]*\n" },
  network = { run = function() section_network() end, render = function(...) render_network(...) end,
              num = 8, head = "\n## 8%. Network[^\n]*\n" },
  subscriptions = { run = function() section_subscriptions() end,
                    render = function(...) render_subscriptions(...) end,
                    num = 9, head = "\n## 9%. Subscriptions[^\n]*\n" },
  bridging = { run = function() section_bridging() end, render = function(...) render_bridging(...) end,
               num = 10, head = "\n## 10%. Bridging[^\n]*\n" },
}

local ok, err = xpcall(function()
  if ONLY then
    SECTIONS[ONLY].run()
    return
  end
  section_server_calls()
  -- the comparison at the same rate: the highest both passed
  for _, a in ipairs(R.lua_uas.steps) do
    local b = step_at(R.sipp_uas, a.rate)
    if a.clean and b and b.clean then R.common_rate = a.rate end
  end
  section_client_calls()
  section_callgrind()
  section_scaling()
  section_non_invite()
  section_media()
  section_dtmf()
  section_network()
  section_subscriptions()
  section_bridging()
end, debug.traceback)
kill_all()

if not ok then
  io.stderr:write("bench/run.lua: the harness broke: ", tostring(err), "\n(logs kept in ", TMP, ")\n")
  os.exit(1)
end

local secs = now() - started
print()
local load_end = (readfile("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)") or "?"
if ONLY then
  local sec = SECTIONS[ONLY]
  sec.render(M, load_end)
  if SMOKE then
    print(fmt("bench smoke (%s): ran (%.0f s)", ONLY, secs))
    os.execute("rm -rf " .. q(TMP))
    os.exit(0)
  end
  -- that section of RESULTS.md replaced or, when it is not there yet, put
  -- before the first higher-numbered section (or the optimisations), the
  -- other sections as they were
  local old = readfile(ROOT .. "/bench/RESULTS.md") or ""
  local mine = table.concat(report, "\n") .. "\n"
  local a = old:find(sec.head)
  local text
  if a then
    local b = old:find("\n## ", a + 1)
    text = old:sub(1, a) .. mine .. (b and old:sub(b + 1) or "")
  else
    local b
    for k = sec.num + 1, 10 do
      b = b or old:find("\n## " .. k .. "%. ")
    end
    b = b or old:find("\n## What each optimisation bought")
    text = b and (old:sub(1, b) .. mine .. "\n" .. old:sub(b + 1)) or (old .. "\n" .. mine)
  end
  writefile(ROOT .. "/bench/RESULTS.md", text)
  print(fmt("bench: replaced section %d of bench/RESULTS.md (%.0f s; logs in %s)", sec.num, secs, TMP))
  os.exit(0)
end
render_header(M, load_end, secs)
render_summary()
render_server_calls()
render_client_calls()
render_callgrind()
render_scaling()
render_non_invite()
render_media(M, load_end)
render_dtmf(M, load_end)
render_network(M, load_end)
render_subscriptions(M, load_end)
render_bridging(M, load_end)
render_optimisations()
if #warnings > 0 then
  out("## Warnings from this run")
  out()
  for _, w in ipairs(warnings) do out("- " .. w) end
  out()
end

if SMOKE then
  print(fmt("bench smoke: every measurement ran (%.0f s)", secs))
  os.execute("rm -rf " .. q(TMP))
else
  writefile(ROOT .. "/bench/RESULTS.md", table.concat(report, "\n") .. "\n")
  print(fmt("bench: wrote bench/RESULTS.md (%.0f s; logs and callgrind output in %s)", secs, TMP))
end
os.exit(0)
