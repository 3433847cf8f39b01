-- bench/dns_lat.lua: what DNS lookups on the loop cost a request to a
-- numeric address (bench/run.lua, section 8).
--
--   ./bin/luasip bench/dns_lat.lua PEER_PORT [options]
--
-- Sends OPTIONS to sip:bench@127.0.0.1:PEER_PORT one at a time (a short
-- sleep between two) and times each round trip with sip.now(), from the
-- script's ua:request to its return: first with nothing else on the loop
-- ("idle"), then while LOOKUPS coroutines resolve host names with
-- sip.resolve on the same UA's resolver ("lookups"). Against a silent
-- server (the default: a UDP socket of this script's own that is never
-- read) every lookup stays outstanding for the whole phase; against a
-- server that answers (--dns ADDR:PORT, e.g. dnsmasq answering
-- *.bench.test) each coroutine resolves a fresh name, then sleeps a
-- second, and again. The names carry a port (n<i>-<k>.bench.test:5060), so
-- RFC 3263 asks A and AAAA only (no NAPTR or SRV), never the same name
-- twice (no cache hit). Prints one line a phase:
--
--   RESULT phase=idle samples=N p50_us= p99_us= max_us= mean_us= failed= outstanding= lookups= lookups_ok=
--          secs= ended_in= ok_in=
--
-- (outstanding: lookups under way at the phase's end; lookups, lookups_ok:
-- started and answered so far; ended_in, ok_in: ended and answered during
-- the phase, which lasted secs seconds)
--
-- Options:
--   --dns ADDR:PORT   the DNS server (default: a silent one)
--   --lookups N       concurrent lookups (default 1000)
--   --samples N       OPTIONS per phase (default 1000)
--   --timeout S       the resolver's timeout (default 60: longer than a phase)

local sip = require "sip"
local core = require "sip.core"

local peer = tonumber(arg[1])
if not peer then
  io.stderr:write("usage: luasip bench/dns_lat.lua PEER_PORT [--dns ADDR:PORT] [--lookups N] [--samples N]\n")
  os.exit(2)
end
local dns, lookups, samples, timeout
do
  local i = 2
  while i <= #arg do
    local a, v = arg[i], arg[i + 1]
    if a == "--dns" then dns = v
    elseif a == "--lookups" then lookups = tonumber(v)
    elseif a == "--samples" then samples = tonumber(v)
    elseif a == "--timeout" then timeout = tonumber(v)
    else
      io.stderr:write("dns_lat.lua: unknown option ", a, "\n")
      os.exit(2)
    end
    i = i + 2
  end
end
lookups, samples, timeout = lookups or 1000, samples or 1000, timeout or 60

sip.log("error")

local silent
if not dns then
  silent = assert(core.socket.open("udp", "127.0.0.1", 0))   -- never read: no answer ever
  dns = silent:address()
end

local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0", dns = { servers = { dns }, timeout = timeout } })
local target = "sip:bench@127.0.0.1:" .. peer

local started, done, ok_n = 0, 0, 0

local function phase(name)
  local t, failed = {}, 0
  local p0, d0, ok0 = sip.now(), done, ok_n
  for _ = 1, samples do
    local t0 = sip.now()
    local res = ua:request("OPTIONS", target)
    local dt = sip.now() - t0
    if res and res.status == 200 then t[#t + 1] = dt else failed = failed + 1 end
    sip.sleep(0.002)
  end
  table.sort(t)
  local function pc(p) return #t > 0 and t[math.max(1, math.ceil(p * #t))] * 1e6 or 0 end
  local sum = 0
  for _, v in ipairs(t) do sum = sum + v end
  local secs = sip.now() - p0
  io.stdout:write(string.format("RESULT phase=%s samples=%d p50_us=%.0f p99_us=%.0f max_us=%.0f mean_us=%.0f " ..
                                "failed=%d outstanding=%d lookups=%d lookups_ok=%d secs=%.2f ended_in=%d " ..
                                "ok_in=%d\n", name, #t, pc(0.5), pc(0.99), pc(1), #t > 0 and sum / #t * 1e6 or 0,
                                failed, started - done, started, ok_n, secs, done - d0, ok_n - ok0))
  io.stdout:flush()
end

-- warm-up: the first requests allocate what later ones reuse
for _ = 1, 20 do ua:request("OPTIONS", target) end
phase("idle")

local running = true
for i = 1, lookups do
  sip.spawn(function()
    local k = 0
    while running do
      k = k + 1
      started = started + 1
      local r = sip.resolve("sip:bench@n" .. i .. "-" .. k .. ".bench.test:5060", { ua = ua })
      done = done + 1
      if r then ok_n = ok_n + 1 end
      if running and not silent then sip.sleep(1) end
    end
  end)
end
sip.sleep(silent and 0.5 or 1.5)   -- the lookups are all under way (answered ones, at their pace)
phase("lookups")
running = false
os.exit(0)
