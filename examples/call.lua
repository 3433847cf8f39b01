-- usage: luasip examples/call.lua URI [seconds] [-l listen] [-t ring_timeout] [-q]
--
-- Places one call to URI with an SDP offer, prints the SIP ladder as it
-- happens (sip.trace), stays in the call for `seconds` (default 5) and
-- hangs up:
--
--   luasip examples/call.lua sip:bob@127.0.0.1:5060 3
--   luasip examples/call.lua "sip:bob@127.0.0.1:5060;transport=tcp"
--
--   -l listen        local address, e.g. udp:0.0.0.0:5070 (default: an
--                    ephemeral port on 0.0.0.0, UDP and TCP)
--   -t seconds       give up (CANCEL) when not answered by then (default 30)
--   -q               no ladder, only the outcome
--
-- Exit status: 0 when the call was answered (and hung up by either side),
-- 1 when it failed (busy, timeout, no route...), 2 on bad usage.

local sip = require "sip"

local USAGE = "usage: luasip examples/call.lua URI [seconds] [-l listen] [-t ring_timeout] [-q]"

local function usage_error(msg)
  io.stderr:write("call: ", msg, "\n", USAGE, "\n")
  os.exit(2)
end

local uri, seconds, ring_timeout, quiet = nil, 5, 30, false
local listen = {}
do
  local argv = arg or {}
  local i = 1
  local function number(flag)
    i = i + 1
    local v = tonumber(argv[i])
    if not v or v <= 0 then usage_error(flag .. " needs a positive number") end
    return v
  end
  while i <= #argv do
    local a = argv[i]
    if a == "-l" then
      i = i + 1
      if not argv[i] then usage_error("-l needs an address such as udp:0.0.0.0:5070") end
      listen[#listen + 1] = argv[i]
    elseif a == "-t" then
      ring_timeout = number(a)
    elseif a == "-q" then
      quiet = true
    elseif a == "-h" or a == "--help" then
      print(USAGE)
      os.exit(0)
    elseif not uri and a:match("^sips?:") then
      uri = a
    elseif uri and tonumber(a) and tonumber(a) >= 0 then
      seconds = tonumber(a)
    else
      usage_error("unexpected argument: " .. a)
    end
    i = i + 1
  end
end
if not uri then usage_error("no URI to call") end

if #listen == 0 then
  local v6 = uri:find("[", 1, true)
  listen = v6 and { "udp:[::]:0", "tcp:[::]:0" } or { "udp:0.0.0.0:0", "tcp:0.0.0.0:0" }
end

local ua, err = sip.ua{ listen = listen, user_agent = "luasip call" }
if not ua then
  io.stderr:write("call: ", err, "\n")
  os.exit(1)
end

-- the address in our offer: the one we listen on, or loopback for "any"
local media_host = ua:address():match("^%a+:%[?([^%]]*)%]?:%d+$") or "127.0.0.1"
if media_host == "0.0.0.0" or media_host == "::" then
  media_host = uri:find("[", 1, true) and "::1" or "127.0.0.1"
end

if not quiet then sip.trace(true) end

local offer = sip.sdp.offer{ addr = media_host, port = 4000,
                             codecs = { "PCMU", "PCMA", "telephone-event" } }
local t0 = sip.now()
local call, why, res = ua:invite(uri, {
  sdp = offer,
  timeout = ring_timeout,
  on_provisional = function(r)
    if quiet then print(string.format("%d %s", r.status, r.reason or "")) end
  end,
})
if not call then
  print(string.format("call failed after %.2f s: %s", sip.now() - t0, why))
  if res then
    local warning = res:header("Warning") or res:header("Reason")
    if warning then print("  " .. warning) end
  end
  ua:close()
  os.exit(1)
end

local media = call.remote_sdp and call.remote_sdp.media[1]
local codecs = {}
for _, c in ipairs(media and media.codecs or {}) do codecs[#codecs + 1] = c.name or tostring(c.pt) end
print(string.format("answered after %.2f s by %s: media %s:%s %s (%s)", sip.now() - t0,
                    call.remote or call.to, call.remote_sdp and call.remote_sdp.addr or "?",
                    media and media.port or "?", table.concat(codecs, ","),
                    media and media.direction or "?"))

-- stay in the call; the far end may hang up first
local ended = call:wait(seconds)
if ended then
  print("the far end hung up: " .. ended)
else
  local ok, herr = call:hangup()
  if ok then
    print(string.format("hung up after %.2f s", sip.now() - t0))
  else
    -- the BYE got no answer: the call is over on our side all the same
    print("hangup: " .. tostring(herr))
  end
end
sip.trace(false)
ua:close()
