-- Run by spec/interop/media_loss_spec.lua inside a private network
-- namespace whose nftables rule drops a share of the RTP datagrams: one
-- UA plays a 3 s tone to another that records it; prints what was
-- recorded and what the receiving session counted, one key=value a line.
local sip = require "sip"
local wav, out = ...
local MEDIA = { addr = "127.0.0.1", ports = "40000-40999" }
local ivr = assert(sip.ua{ listen = "udp:127.0.0.1:5070", media = MEDIA })
local caller = assert(sip.ua{ listen = "udp:127.0.0.1:5080", media = MEDIA })
ivr:on("INVITE", function(call)
  assert(call:answer())
  local rec = call:record(out, { max = 10 })
  local st = call.media:stats()
  print("reason=" .. rec.reason)
  print("duration=" .. rec.duration)
  print("received=" .. st.packets_received)
  print("lost=" .. st.lost)
end)
local call = assert(caller:invite(ivr:uri("ivr"), { timeout = 5 }))
assert(call:play(wav))
sip.sleep(0.3)               -- the last packets arrive before the BYE
call:hangup()
ivr:close()
caller:close()
