-- bench/uas.lua: the Lua UAS the benchmark drives (run by bench/run.lua).
--
--   ./bin/luasip bench/uas.lua PORT [options]
--
-- Answers every INVITE the way a user's script would (180, 200 with the
-- default SDP answer, wait for the ACK, then for the BYE), answers
-- REGISTER with digest when req:authenticate exists, and OPTIONS from C
-- (the core's default answer) unless --options-handler asks for a Lua
-- handler. Prints "READY <capabilities>" once listening, then one
-- "STAT ..." line a second (ua:stats() plus the calls this script saw).
--
-- Options:
--   --max-txns N        max_server_transactions (default 2,000,000: the
--                       library's default of 100,000 caps a UDP UAS at
--                       about 1,500 cps, each call keeping two server
--                       transactions 32 s)
--   --options-handler   serve OPTIONS with a Lua handler returning 200
--   --stop-after N      sip.stop() once N calls (or OPTIONS/REGISTER
--                       requests) were served and, with --drain, no
--                       transaction is left
--   --drain             see --stop-after
--   --t1 S              T1 (default the library's 0.5)
--   --parent PID        exit when process PID (the harness) is gone
--
-- FULLGC=1 in the environment: a full collection before each STAT line,
-- so that its mem_kb is the live heap rather than live plus garbage.

local sip = require "sip"
local core = require "sip.core"

local port = tonumber(arg[1])
if not port then
  io.stderr:write("usage: luasip bench/uas.lua PORT [options]\n")
  os.exit(2)
end

local max_txns, options_handler, stop_after, drain, t1 = 2000000, false, nil, false, nil
local parent
do
  local i = 2
  while i <= #arg do
    local a = arg[i]
    if a == "--max-txns" then
      max_txns = tonumber(arg[i + 1]); i = i + 1
    elseif a == "--options-handler" then
      options_handler = true
    elseif a == "--stop-after" then
      stop_after = tonumber(arg[i + 1]); i = i + 1
    elseif a == "--drain" then
      drain = true
    elseif a == "--parent" then
      parent = arg[i + 1]; i = i + 1
    elseif a == "--t1" then
      t1 = tonumber(arg[i + 1]); i = i + 1
    else
      io.stderr:write("uas.lua: unknown option ", a, "\n")
      os.exit(2)
    end
    i = i + 1
  end
end

sip.log("error")
local FULLGC = os.getenv("FULLGC")

local ua = assert(sip.ua{ listen = "udp:127.0.0.1:" .. port, max_server_transactions = max_txns,
                          t1 = t1 })

local calls_in, calls_answered, calls_done, calls_failed = 0, 0, 0, 0
local options_n, register_ok, register_challenged = 0, 0, 0

ua:on("INVITE", function(call)
  calls_in = calls_in + 1
  call:ring()
  local ok = call:answer()
  if not ok then
    calls_failed = calls_failed + 1
    return
  end
  calls_answered = calls_answered + 1
  call:wait()
  calls_done = calls_done + 1
end)

if options_handler then
  ua:on("OPTIONS", function()
    options_n = options_n + 1
    return 200
  end)
end

-- digest on REGISTER: req:authenticate is the public API (DESIGN.md);
-- without it the harness reports "not available"
local Msg = core.Message
local has_auth = Msg and ((type(Msg.methods) == "table" and Msg.methods.authenticate ~= nil) or
                          (type(Msg.__index) == "table" and Msg.__index.authenticate ~= nil))
local credentials = { bench = "secret" }
ua:on("REGISTER", function(req)
  if not req.authenticate then
    return 501, "authenticate not available"
  end
  local user = req:authenticate{ realm = "bench", credentials = credentials }
  if not user then
    register_challenged = register_challenged + 1
    return
  end
  register_ok = register_ok + 1
  return 200
end)

local function served()
  return calls_done + options_n + register_ok
end

io.stdout:write("READY auth=", has_auth and "yes" or "no", "\n")
io.stdout:flush()

-- one STAT line a second; stop when asked to
sip.spawn(function()
  while true do
    sip.sleep(1)
    if FULLGC then collectgarbage() end
    local s = ua:stats()
    io.stdout:write(string.format(
      "STAT t=%.1f txns=%d server_txns=%d dialogs=%d calls=%d in=%d answered=%d done=%d " ..
      "failed=%d options=%d reg_ok=%d reg_401=%d rx=%d tx=%d dropped=%d retx=%d mem_kb=%d\n",
      sip.now(), s.transactions, s.server_transactions, s.dialogs, s.calls, calls_in,
      calls_answered, calls_done, calls_failed, options_n, register_ok, register_challenged,
      s.received, s.sent, s.dropped, s.retransmissions, math.floor(collectgarbage("count"))))
    io.stdout:flush()
    if parent and not io.open("/proc/" .. parent .. "/stat") then
      os.exit(3)   -- the harness is gone: do not linger
    end
    if stop_after and served() >= stop_after and (not drain or s.transactions == 0) then
      io.stdout:write("STOP\n")
      io.stdout:flush()
      ua:close()
      sip.stop()
      return
    end
  end
end)
