-- usage: luasip examples/answer.lua [listen...] [-n calls] [-r ring_seconds]
--
-- Answers incoming calls: 180 Ringing, then 200 OK with an SDP answer to
-- the caller's offer (sip.sdp.answer), then waits for the caller to hang
-- up, and prints what happened to each call:
--
--   luasip examples/answer.lua                       (udp:127.0.0.1:5060)
--   luasip examples/answer.lua udp:0.0.0.0:5060 tcp:0.0.0.0:5060
--   sipp -sn uac -m 10 127.0.0.1:5060                (from another shell)
--
--   -n calls         stop after that many calls (default: serve until Ctrl-C)
--   -r seconds       ring that long before answering (default 0)
--
-- Exit status: 0, 1 when a listen address cannot be bound, 2 on bad usage.

local sip = require "sip"

local USAGE = "usage: luasip examples/answer.lua [listen...] [-n calls] [-r ring_seconds]"

local function usage_error(msg)
  io.stderr:write("answer: ", msg, "\n", USAGE, "\n")
  os.exit(2)
end

local listen, max_calls, ring_for = {}, nil, 0
do
  local argv = arg or {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "-n" or a == "-r" then
      i = i + 1
      local v = tonumber(argv[i])
      if not v or v < 0 then usage_error(a .. " needs a non-negative number") end
      if a == "-n" then max_calls = math.floor(v) else ring_for = v end
    elseif a == "-h" or a == "--help" then
      print(USAGE)
      os.exit(0)
    elseif a:match("^%a+:.+:%d+$") then
      listen[#listen + 1] = a
    else
      usage_error("not a listen address (udp:HOST:PORT) or an option: " .. a)
    end
    i = i + 1
  end
end
if #listen == 0 then listen[1] = "udp:127.0.0.1:5060" end

local ua, err = sip.ua{ listen = listen, user_agent = "luasip answer" }
if not ua then
  io.stderr:write("answer: ", err, "\n")
  os.exit(1)
end

-- the address to put in our SDP: where we listen, or loopback for "any"
local media_host = ua:address():match("^%a+:%[?([^%]]*)%]?:%d+$") or "127.0.0.1"
if media_host == "0.0.0.0" or media_host == "::" then media_host = "127.0.0.1" end

local served, next_port = 0, 20000

local function say(call, fmt, ...)
  print(string.format("[%s] " .. fmt, call.call_id, ...))
end

ua:on("INVITE", function(call)
  served = served + 1
  local n = served
  if max_calls and n >= max_calls then
    -- the last call we take: stop listening for more
    ua:on("INVITE", function() return 486 end)
  end
  say(call, "call %d from %s to %s", n, call.from, call.to)
  call:ring()
  if ring_for > 0 then
    sip.sleep(ring_for)
    if call.state == "ended" then
      say(call, "caller gave up while ringing (%s)", call.ended_why)
      return
    end
  end

  -- answer the offer, if any, with our codecs on a port of our own
  local answer
  local offer = call.invite.body
  if offer ~= "" then
    local parsed = sip.sdp.parse(offer)
    if parsed then
      local codecs = {}
      for _, c in ipairs(parsed.media[1] and parsed.media[1].codecs or {}) do
        codecs[#codecs + 1] = (c.name or "?") .. "/" .. c.pt
      end
      say(call, "offer: %s", table.concat(codecs, " "))
    end
    answer = sip.sdp.answer(offer, { addr = media_host, port = next_port })
  else
    answer = sip.sdp.offer{ addr = media_host, port = next_port }
  end
  next_port = next_port + 2
  if next_port > 30000 then next_port = 20000 end

  local ok, why = call:answer{ sdp = answer }
  if not ok then
    say(call, "not answered: %s", why)
    return
  end
  say(call, "answered (%s)", answer:match("m=[^\r\n]*"))
  call:on("reinvite", function(_, req)
    local p = req.body ~= "" and sip.sdp.parse(req.body)
    say(call, "re-INVITE: %s", p and p.media[1] and p.media[1].direction or "no offer")
    -- nil: the default answer (hold gets recvonly, unhold sendrecv)
  end)
  local ended = call:wait()
  say(call, "ended: %s", ended)
  if max_calls and n >= max_calls then
    sip.sleep(0.2)   -- let the 200 to the BYE go out
    ua:close()
  end
end)

print("answering calls on " .. table.concat(listen, ", ") ..
      (max_calls and (" (" .. max_calls .. " calls)") or " (Ctrl-C to stop)"))
