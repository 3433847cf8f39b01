--- The supervisor of `luasip -w N script.lua`: N worker processes, each
-- its own loop and user agents, sharing the listen ports (SO_REUSEPORT:
-- the kernel spreads UDP datagrams over them by source address and port,
-- TCP/TLS connections by connection). A worker that dies is started
-- again (after a pause when it keeps dying at once); one that ends by
-- itself with status 0 is not. SIGINT, SIGTERM and SIGQUIT stop them all
-- (SIGKILL after 5 s); SIGHUP is passed on. Private module: bin/luasip
-- uses it; scripts see `sip.worker`.
-- @module sip.workers

local core = require "sip.core"

local M = {}

--- Run n workers of argv (a command line) until all have ended.
-- @int n how many
-- @tab argv the worker's command line, e.g. { "lua5.4", "bin/luasip", "script.lua" }
-- @func[opt] say a function(line) for what happens (stderr by default)
-- @treturn integer the exit status for the supervisor: 0 when stopped by a
-- signal or when every worker ended with 0, else 1
function M.supervise(sip, n, argv, say)
  say = say or function(line) io.stderr:write("luasip: ", line, "\n") end
  local proc = core.proc
  local pids, started, quick_deaths = {}, {}, {}
  local stopping, failed = false, false

  local function start(id)
    local pid, err = proc.spawn(argv, { LUASIP_WORKER = id, LUASIP_WORKERS = n })
    if not pid then
      say("worker " .. id .. ": " .. err)
      failed = true
      return
    end
    pids[pid] = id
    started[id] = core.now()
  end

  local function ended(pid, status)
    local id = pids[pid]
    if not id then return end
    pids[pid] = nil
    if stopping or status == 0 then
      if status ~= 0 and not stopping then failed = true end
      if not next(pids) then core.stop() end
      return
    end
    -- it died: again, at once the first time, later if it keeps dying
    local quick = core.now() - started[id] < 2
    quick_deaths[id] = quick and (quick_deaths[id] or 0) + 1 or 0
    local delay = math.min(10, quick_deaths[id])
    say(string.format("worker %d (pid %d) %s; starting it again%s", id, pid,
        status < 0 and "killed by signal " .. -status or "exited with " .. status,
        delay > 0 and " in " .. delay .. " s" or ""))
    sip.spawn(function()
      if delay > 0 then sip.sleep(delay) end
      if not stopping then start(id) end
    end)
  end

  local function signalled(name)
    if name == "HUP" then
      for pid in pairs(pids) do proc.kill(pid, "HUP") end
      return
    end
    if stopping then return end
    stopping = true
    for pid in pairs(pids) do proc.kill(pid, "TERM") end
    if not next(pids) then return core.stop() end
    sip.spawn(function()
      sip.sleep(5)
      for pid in pairs(pids) do proc.kill(pid, "KILL") end
    end)
  end

  proc.watch(ended, signalled)
  for id = 1, n do start(id) end
  if next(pids) then sip.run() end
  return failed and 1 or 0
end

return M
