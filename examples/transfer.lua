-- usage: luasip examples/transfer.lua TARGET [listen] [-b] [-n calls] [-t secs]
--
-- A receptionist: answers each caller and puts the caller through to
-- TARGET, the way a person at a switchboard does (RFC 5589):
--
--   attended (the default): the caller is put on hold, a consultation call
--   goes to TARGET, and once TARGET answers the caller is transferred to
--   it with REFER and Replaces (RFC 3891): the caller's phone calls
--   TARGET, and that call takes the consultation call's place. If TARGET
--   does not answer, the caller is taken off hold, then hung up.
--
--   blind (-b): the caller is transferred to TARGET at once, with a
--   plain REFER; the caller's phone calls TARGET.
--
-- Either way the caller's phone must accept transfers (REFER); the
-- receptionist's calls end when the transfer succeeded.
--
--   luasip examples/transfer.lua sip:bob@127.0.0.1:5070 udp:127.0.0.1:5060
--   then call sip:reception@127.0.0.1:5060 from a softphone
--
--   -b         blind transfer
--   -n calls   stop after that many calls (default: serve until Ctrl-C)
--   -t secs    how long TARGET may ring (default 30)
--
-- Each step is printed, then the outcome, e.g.
--   transfer: call 1: answered sip:alice@127.0.0.1:5062
--   transfer: call 1: caller on hold, calling sip:bob@127.0.0.1:5070
--   transfer: call 1: sip:bob@127.0.0.1:5070 answered, transferring the caller (attended)
--   transfer: call 1: consultation call ended (bye)
--   transfer: call 1: transferred (200)
--   transfer: call 1: call with the caller ended (bye)

local sip = require "sip"

local USAGE = "usage: luasip examples/transfer.lua TARGET [listen] [-b] [-n calls] [-t secs]"

local target, listen, blind, max_calls, ring_time = nil, "udp:127.0.0.1:5060", false, nil, 30
do
  local argv, i = arg or {}, 1
  while i <= #argv do
    local a = argv[i]
    local v = tonumber(argv[i + 1])
    if a == "-b" then blind = true
    elseif a == "-n" and v then max_calls, i = v, i + 1
    elseif a == "-t" and v then ring_time, i = v, i + 1
    elseif not target and a:match("^sips?:") then target = a
    elseif a:match("^%a+:.+:%d+$") then listen = a
    else
      io.stderr:write(USAGE, "\n")
      os.exit(2)
    end
    i = i + 1
  end
  if not target then
    io.stderr:write(USAGE, "\n")
    os.exit(2)
  end
end

local ua = assert(sip.ua{ listen = listen, user_agent = "luasip-receptionist" })
print("transfer: listening on " .. ua:uri("reception") .. ", putting callers through to " .. target)

-- one caller, put through to the target: true once transferred
local function put_through(caller, say)
  if blind then
    say("transferring the caller to " .. target .. " (blind)")
    return caller:refer(target)
  end
  local held, why = caller:hold()
  if not held then return nil, "hold: " .. why end
  say("caller on hold, calling " .. target)
  local consult, err = ua:invite(target, { timeout = ring_time })
  if not consult then
    caller:unhold()
    return nil, target .. " did not answer (" .. err .. ")"
  end
  say(target .. " answered, transferring the caller (attended)")
  local ok, status = caller:refer(consult)
  if not ok then
    consult:hangup()
    caller:unhold()
    return nil, status
  end
  -- the caller's new call replaces this one: the target hangs it up
  local ended = consult:wait(10)
  if not ended then
    consult:hangup()
    ended = "hangup"
  end
  say("consultation call ended (" .. ended .. ")")
  return ok, status
end

local served = 0
ua:on("INVITE", function(caller)
  served = served + 1
  local n = served
  local function say(what) print("transfer: call " .. n .. ": " .. what) end
  if not caller:answer() then return say("the caller went away before the answer") end
  say("answered " .. caller.invite.from_uri)
  local ok, status = put_through(caller, say)
  say(ok and ("transferred (" .. status .. ")") or ("not transferred: " .. tostring(status)))
  -- after a transfer the caller hangs up its call to us (RFC 5589);
  -- after a failure we do
  local ended = ok and caller:wait(10)
  if not ended then
    caller:hangup()
    ended = "hangup"
  end
  say("call with the caller ended (" .. ended .. ")")
  if max_calls and n >= max_calls then ua:close() end
end)
