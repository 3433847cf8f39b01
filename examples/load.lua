-- examples/load.lua: a call flow as a load test.
--
--   luasip load examples/load.lua -r 100 -m 1000 -l 200 -- sip:service@127.0.0.1:5060
--   sipp -sn uas -p 5060                       (a peer to try it on)
--
-- `luasip load` runs this script once, takes the call flow it returns and
-- starts it at the rate (-r) until the limit (-m) or the duration (-d),
-- never more than -l calls at once, with SIPp's main screen (on a
-- terminal) or a progress line a second, then prints a summary; --stats
-- FILE writes SIPp's -trace_stat CSV, --rtt FILE a response-time
-- histogram. The exit status is 1 when a call failed.
--
-- The flow: place a call, count the time to the answer as the response
-- time, stay `hold` seconds (the second argument, default 0), hang up. A
-- call succeeds when the flow returns a true value; a failure's reason
-- (the second value returned, or the error raised) is counted on the
-- screen and in the summary.
--
-- From a script of its own, the same is:
--
--   local summary = sip.load{ rate = 100, limit = 1000, run = flow, ua = ua }

local sip = require "sip"

local uri = arg[1] or "sip:service@127.0.0.1:5060"
local hold = tonumber(arg[2] or "") or 0

local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0", user_agent = "luasip load" })

local function flow(i, rtd)
  local call, err = ua:invite(uri, { timeout = 30, headers = { ["X-Call-Number"] = tostring(i) } })
  if not call then return nil, err end          -- e.g. "486 Busy Here", "timeout"
  rtd()                                          -- answered: the response time
  if hold > 0 then
    local ended = call:wait(hold)               -- the far end may hang up first
    if ended then return nil, "hung up by the far end: " .. ended end
  end
  local ok, herr = call:hangup()
  if not ok then return nil, "BYE: " .. tostring(herr) end
  return true
end

-- a table: sip.load's options (the command line's override them); `ua`
-- lets the screen count this UA's retransmissions
return { run = flow, ua = ua, rate = 10 }
