-- usage: luasip examples/options_ping.lua URI [URI...] [-c count] [-i interval] [-t timeout] [-l listen]
--
-- Pings each SIP URI with OPTIONS, prints the status and the round-trip
-- time of every ping, then a summary per URI, like ping(8):
--
--   luasip examples/options_ping.lua sip:127.0.0.1:5060 sip:10.0.0.7;transport=tcp -c 5
--
--   -c count     pings per URI (default 3)
--   -i interval  seconds between rounds (default 1)
--   -t timeout   seconds to wait for each answer (default 5)
--   -l listen    local address to send from, e.g. udp:0.0.0.0:5070
--                (default udp:0.0.0.0:0, plus udp:[::]:0 for IPv6 URIs)
--
-- Any final response counts as an answer: a 404 or a 405 still says that
-- something is there. The exit status is 1 when a ping got no answer
-- (timeout, transport error), 2 on bad usage.

local sip = require "sip"

local USAGE = "usage: luasip examples/options_ping.lua URI [URI...] " ..
              "[-c count] [-i interval] [-t timeout] [-l listen]"

local function usage_error(msg)
  io.stderr:write("options_ping: ", msg, "\n", USAGE, "\n")
  os.exit(2)
end

-- command line
local uris, listen = {}, {}
local count, interval, timeout = 3, 1, 5
do
  local argv = arg or {}
  local i = 1
  local function number(flag)
    i = i + 1
    local v = tonumber(argv[i])
    if not v or v < 0 then usage_error(flag .. " needs a non-negative number") end
    return v
  end
  while i <= #argv do
    local a = argv[i]
    if a == "-c" then
      count = math.floor(number(a))
      if count < 1 then usage_error("-c needs a count of at least 1") end
    elseif a == "-i" then
      interval = number(a)
    elseif a == "-t" then
      timeout = number(a)
      if timeout == 0 then usage_error("-t needs a timeout above 0") end
    elseif a == "-l" then
      i = i + 1
      if not argv[i] then usage_error("-l needs an address such as udp:0.0.0.0:5070") end
      listen[#listen + 1] = argv[i]
    elseif a == "-h" or a == "--help" then
      print(USAGE)
      os.exit(0)
    elseif a:match("^sips?:") then
      uris[#uris + 1] = a
    else
      usage_error("not a SIP URI or an option: " .. a)
    end
    i = i + 1
  end
end
if #uris == 0 then usage_error("no URI to ping") end

if #listen == 0 then
  listen[1] = "udp:0.0.0.0:0"
  for _, uri in ipairs(uris) do
    if uri:find("[", 1, true) then
      listen[2] = "udp:[::]:0"
      break
    end
  end
end

local ua, err = sip.ua{ listen = listen, user_agent = "luasip options_ping" }
if not ua then
  io.stderr:write("options_ping: ", err, "\n")
  os.exit(1)
end

-- one record per URI: answers, failures and round-trip times
local stats = {}
for i, uri in ipairs(uris) do
  stats[i] = { uri = uri, sent = 0, answered = 0, failed = 0, rtt = {} }
end

local width = 0
for _, uri in ipairs(uris) do width = math.max(width, #uri) end

local function ping(st, seq)
  st.sent = st.sent + 1
  local started = sip.now()
  local res, why = ua:request("OPTIONS", st.uri, { timeout = timeout })
  local ms = (sip.now() - started) * 1000
  if res then
    st.answered = st.answered + 1
    st.rtt[#st.rtt + 1] = ms
    print(string.format("%-" .. width .. "s  seq=%d  %d %s  rtt=%.2f ms",
                        st.uri, seq, res.status, res.reason or "", ms))
  else
    st.failed = st.failed + 1
    print(string.format("%-" .. width .. "s  seq=%d  no answer: %s  (after %.2f ms)",
                        st.uri, seq, why, ms))
  end
end

for seq = 1, count do
  if seq > 1 and interval > 0 then sip.sleep(interval) end
  for _, st in ipairs(stats) do ping(st, seq) end
end

-- summary
print()
local any_failed = false
for _, st in ipairs(stats) do
  local line = string.format("--- %s: %d sent, %d answered, %d failed", st.uri, st.sent,
                             st.answered, st.failed)
  if #st.rtt > 0 then
    local min, max, sum = math.huge, 0, 0
    for _, ms in ipairs(st.rtt) do
      min, max, sum = math.min(min, ms), math.max(max, ms), sum + ms
    end
    line = line .. string.format(", rtt min/avg/max = %.2f/%.2f/%.2f ms", min, sum / #st.rtt, max)
  end
  print(line)
  if st.failed > 0 then any_failed = true end
end

ua:close()
if any_failed then os.exit(1) end
