--- Test helper: drives the luasip loop from busted (which has no async
-- tests), finds free ports, and starts real peers (SIPp, Kamailio) that it
-- always stops, on failure too.
local sip = require "sip"
local core = require "sip.core"

local helper = {}

local function abspath(p)
  local f = io.popen("cd '" .. p .. "' && pwd")
  local r = f:read("l")
  f:close()
  return r
end
local root = abspath((debug.getinfo(1, "S").source:match("^@(.*)/helper%.lua$") or "spec") .. "/..")
helper.root = root
helper.tmp = root .. "/spec/tmp"
os.execute("mkdir -p '" .. helper.tmp .. "'")

sip.log("error")

--- pcall fn(...), assert that it raised an error matching `pattern`;
-- returns the message.
function helper.raises(pattern, fn, ...)
  local luassert = require "luassert"   -- busted's assert lives in the spec's environment
  local ok, err = pcall(fn, ...)
  luassert.is_false(ok, "expected an error matching '" .. pattern .. "'")
  luassert.matches(pattern, tostring(err))
  return tostring(err)
end

--- A maker of user agents closed after each test: pass busted's
-- after_each (spec functions are not globals of this module).
-- `local ua = helper.uas(after_each, { listen = ... })`, then `ua()` or
-- `ua(opts)` in a test.
function helper.uas(after_each, defaults)
  local open = {}
  after_each(function()
    for i = #open, 1, -1 do open[i]:close() end
    open = {}
  end)
  return function(opts)
    local u = assert(sip.ua(opts or defaults or { listen = "udp:127.0.0.1:0" }))
    open[#open + 1] = u
    return u
  end
end

--- Run a shell command: its output (stdout and stderr) and whether it
-- exited 0.
function helper.sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return out, ok == true
end

--- What sox says of a WAV: duration (s), RMS amplitude (0..1), rough
-- frequency (Hz).
function helper.sound(path)
  local stat = helper.sh("sox '" .. path .. "' -n stat")
  return tonumber(stat:match("Length %(seconds%):%s+([%d%.]+)")),
         tonumber(stat:match("RMS%s+amplitude:%s+([%d%.]+)")),
         tonumber(stat:match("Rough%s+frequency:%s+(%d+)"))
end

--- Run fn in a luasip coroutine and drive the loop until it returns or
-- `timeout` seconds pass. Errors (assertion failures included) are
-- raised again here with the coroutine's traceback.
function helper.run(fn, timeout)
  timeout = timeout or 30
  local done, ok, err = false, true, nil
  local results
  sip._spawn_with(function(success, tb, ...)
    done, ok = true, success
    if success then results = table.pack(tb, ...) else err = tb end
  end, fn)
  local deadline = core.now() + timeout
  while not done do
    if core.now() > deadline then
      error("helper.run: still running after " .. timeout .. " s", 2)
    end
    core.step(0.05)
  end
  if not ok then error(err, 0) end
  return table.unpack(results or {}, 1, results and results.n or 0)
end

--- Drive the loop for `seconds` without a coroutine of our own.
function helper.spin(seconds)
  local deadline = core.now() + seconds
  while core.now() < deadline do core.step(0.02) end
end

--- A port free for both UDP and TCP on 127.0.0.1 (or ::1).
function helper.free_port(host)
  host = host or "127.0.0.1"
  local spec = host:find(":") and ("[" .. host .. "]") or host
  for _ = 1, 50 do
    local ua = sip.ua{ listen = "udp:" .. spec .. ":0" }
    local port = tonumber(ua:address():match(":(%d+)$"))
    ua:close()
    local probe = sip.ua{ listen = { "udp:" .. spec .. ":" .. port, "tcp:" .. spec .. ":" .. port } }
    if probe then
      probe:close()
      return port
    end
  end
  error("no free port")
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helper.shell_quote = shell_quote

local procs = {}

--- Start a command in its own session; returns a process handle with
-- :done() (exit code or nil while running), :wait(timeout) (drives the
-- luasip loop meanwhile), :stop() and :log().
function helper.spawn(argv, name)
  local id = (name or "proc") .. "-" .. tostring(math.random(1, 1e9))
  local log = helper.tmp .. "/" .. id .. ".log"
  local rcfile = helper.tmp .. "/" .. id .. ".rc"
  os.remove(rcfile)
  local cmd = {}
  for i, a in ipairs(argv) do cmd[i] = shell_quote(a) end
  local line = "cd " .. shell_quote(helper.tmp) .. " && setsid sh -c " ..
    shell_quote(table.concat(cmd, " ") .. " >" .. shell_quote(log) .. " 2>&1; echo $? >" ..
                shell_quote(rcfile)) .. " </dev/null >/dev/null 2>&1 & echo $!"
  local p = io.popen(line)
  local pid = tonumber(p:read("l"))
  p:close()
  assert(pid, "could not start " .. argv[1])
  local proc = { pid = pid, log_path = log, rc_path = rcfile, argv = argv }
  function proc.done()
    local f = io.open(rcfile)
    if not f then return nil end
    local rc = tonumber(f:read("l"))
    f:close()
    return rc
  end
  function proc.wait(_, timeout)
    local deadline = core.now() + (timeout or 60)
    while core.now() < deadline do
      local rc = proc.done()
      if rc then return rc end
      core.step(0.05)
    end
    return nil, "timeout"
  end
  function proc.stop()
    if not proc.stopped then
      proc.stopped = true
      os.execute("kill -TERM -" .. pid .. " 2>/dev/null; sleep 0.05; kill -KILL -" .. pid ..
                 " 2>/dev/null")
    end
  end
  function proc.log()
    local f = io.open(log)
    if not f then return "" end
    local s = f:read("a")
    f:close()
    return s
  end
  procs[#procs + 1] = proc
  return proc
end

--- Stop every process started through helper.spawn (call from finally).
function helper.stop_all()
  for _, p in ipairs(procs) do p.stop() end
  procs = {}
end

--- Start SIPp. opts: scenario (-sn name) or sf (file in spec/scenarios),
-- port, remote ("127.0.0.1:5060"), transport ("u1", "t1"), extra args.
function helper.sipp(opts)
  local argv = { "sipp", "-nostdin", "-i", opts.host or "127.0.0.1", "-p", tostring(opts.port) }
  if opts.sn then argv[#argv + 1] = "-sn"; argv[#argv + 1] = opts.sn end
  if opts.sf then
    argv[#argv + 1] = "-sf"
    argv[#argv + 1] = opts.sf:find("/") and opts.sf or (root .. "/spec/scenarios/" .. opts.sf)
  end
  if opts.transport then argv[#argv + 1] = "-t"; argv[#argv + 1] = opts.transport end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = tostring(a) end
  if opts.remote then argv[#argv + 1] = opts.remote end
  local proc = helper.spawn(argv, "sipp")
  if not opts.remote then
    -- a UAS: wait until it has bound its port (a loaded machine starts
    -- it late, and a request sent before would be refused)
    local deadline = core.now() + 15
    while core.now() < deadline and not proc.done() do
      local p = io.popen("ss -Hln '( sport = :" .. tonumber(opts.port) .. " )' 2>/dev/null")
      local bound = p:read("a")
      p:close()
      if bound:find("%S") then break end
      helper.spin(0.05)
    end
  end
  -- and a moment more, to be past its own start-up
  helper.spin(opts.startup or 0.3)
  return proc
end

--- Where this Kamailio keeps its modules (the directory with tm.so).
function helper.kamailio_modules()
  local p = io.popen("kamailio -h 2>&1")
  local help = p:read("a")
  p:close()
  local candidates = { help:match("%-L path%s+Modules search path %(default: ([^)]+)%)") }
  local g = io.popen("ls -d /usr/lib/*/kamailio/modules /usr/lib/kamailio/modules " ..
                     "/usr/local/lib*/kamailio/modules 2>/dev/null")
  for line in g:lines() do candidates[#candidates + 1] = line end
  g:close()
  for _, dir in ipairs(candidates) do
    local f = io.open(dir .. "/tm.so")
    if f then
      f:close()
      return dir
    end
  end
  error("kamailio modules (tm.so) not found in: " .. table.concat(candidates, ", "))
end

--- Start Kamailio and wait until it answers OPTIONS over UDP. opts:
-- `cfg` (a file in spec/kamailio, or a path), `listen` (a list of
-- "proto:127.0.0.1:port"; default one free port with a listener for each
-- of `transports`, default { "udp" }), `rundir` (default one of its own
-- in spec/tmp), `args` (more arguments). Returns { port, uri (the first
-- UDP listener), proc, rundir, stop = fn } (stop is idempotent; the
-- process also stops with stop_all).
function helper.kamailio(opts)
  local listen = opts.listen
  local port
  if not listen then
    port = helper.free_port()
    listen = {}
    for _, tr in ipairs(opts.transports or { "udp" }) do
      listen[#listen + 1] = tr .. ":127.0.0.1:" .. port
    end
  end
  local udp
  for _, l in ipairs(listen) do udp = udp or l:match("^udp:(.*)$") end
  assert(udp, "helper.kamailio needs a UDP listener (to see it is up)")
  port = port or tonumber(udp:match(":(%d+)$"))
  local own_rundir = not opts.rundir
  local rundir = opts.rundir or (helper.tmp .. "/kamailio-" .. port)
  os.execute("mkdir -p " .. shell_quote(rundir))
  local cfg = opts.cfg:find("/") and opts.cfg or (root .. "/spec/kamailio/" .. opts.cfg)
  local argv = { "kamailio", "-f", cfg, "-DD", "-E", "-n", "1", "-m", "32", "-M", "4",
    "-Y", rundir, "-w", rundir, "-L", helper.kamailio_modules() }
  for _, l in ipairs(listen) do
    argv[#argv + 1] = "-l"
    argv[#argv + 1] = l
  end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  local proc = helper.spawn(argv, "kamailio")
  local k = { port = port, uri = "sip:" .. udp, proc = proc, rundir = rundir }
  function k.stop()
    proc.stop()
    if own_rundir then os.execute("rm -rf " .. shell_quote(rundir)) end
  end
  local probe = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
  local up = false
  local deadline = core.now() + 15
  while not up and core.now() < deadline and not proc.done() do
    up = helper.run(function()
      local res = probe:request("OPTIONS", k.uri, { timeout = 0.3 })
      return res ~= nil
    end, 5)
    if not up then helper.spin(0.1) end   -- not bound yet
  end
  probe:close()
  if not up then
    local log = proc.log()
    k.stop()
    error("kamailio did not start:\n" .. log)
  end
  return k
end

--- Wait until a UA (or several) has no transactions left (after Timer J/K).
function helper.idle(ua, timeout)
  local deadline = core.now() + (timeout or 10)
  while core.now() < deadline do
    local s = ua:stats()
    if s.transactions == 0 then return true end
    core.step(0.05)
  end
  return false, ua:stats()
end

return helper
