--- sip.test: the scripted peer (raw UDP/TCP socket: what arrives as sent,
-- what it sends exactly as given) and sip.test.run, used the way a user's
-- spec would: the example scripts examples/call.lua (a UAC) and
-- examples/answer.lua (a UAS) run as processes of their own, and the
-- peer plays the other end of their call flows.
local sip = require "sip"
local helper = require "helper"

local luasip = helper.root .. "/bin/luasip"

-- run an example in a process of its own; its output and exit status come
-- back once it exits (waiting inside a luasip coroutine)
local function example(args)
  local argv = { luasip }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return helper.spawn(argv, "example")
end

local function finish(proc, timeout)
  local deadline = sip.now() + (timeout or 10)
  while not proc.done() do
    if sip.now() > deadline then return nil, proc.log() end
    sip.sleep(0.05)
  end
  return proc.done(), proc.log()
end

describe("sip.test.peer plays the far end of examples/call.lua", function()
  after_each(function() helper.stop_all() end)

  for _, tr in ipairs{ "udp", "tcp" } do
    it("over " .. tr .. ": INVITE with an offer, 180, 200 with an answer, ACK, BYE, 200", function()
      local peer <close> = sip.test.peer{ transport = tr }
      local proc = example{ helper.root .. "/examples/call.lua", peer:uri("bob"), "0.3", "-q" }
      sip.test.run(function()
        local inv = assert(peer:expect("INVITE", 5))
        assert.are.equal(peer:uri("bob"), inv.uri)
        assert.matches("m=audio %d+ RTP/AVP 0 8", inv.body)
        assert(peer:reply(inv, 100))
        assert(peer:reply(inv, 180))
        local ok_text = assert(peer:reply(inv, 200, nil, { body = peer:sdp(4002) }))
        local tag = ok_text:match("\r\nTo: [^\r]*;tag=([%w_-]+)")
        local ack = assert(peer:expect("ACK", 5))
        assert.are.equal(inv.call_id, ack.call_id)
        assert.are.equal(tag, ack.to_tag)
        assert.are.equal(inv.cseq, ack.cseq)
        -- the script stays 0.3 s, then hangs up
        local bye = assert(peer:expect("BYE", 5))
        assert.are.equal(tag, bye.to_tag)
        assert(peer:reply(bye, 200))
        local rc, out = finish(proc)
        assert.are.equal(0, rc, out)
        assert.matches("180 Ringing", out)
        assert.matches("answered after [%d.]+ s by .*media 127%.0%.0%.1:4002", out)
        assert.matches("hung up after", out)
        -- nothing else came: no retransmission got through, no stray request
        assert.are.same({}, peer:queued())
      end, 15)
    end)
  end

  it("486 Busy Here: the script reports the failure and exits 1 (the core ACKs the 486)", function()
    local peer <close> = sip.test.peer{}
    local proc = example{ helper.root .. "/examples/call.lua", peer:uri("bob"), "-q" }
    sip.test.run(function()
      local inv = assert(peer:expect("INVITE", 5))
      assert(peer:reply(inv, 486, nil, { headers = { Warning = '399 peer "busy in a spec"' } }))
      local ack = assert(peer:expect("ACK", 5))
      assert.are.equal(inv.cseq, ack.cseq)
      local rc, out = finish(proc)
      assert.are.equal(1, rc, out)
      assert.matches("call failed after [%d.]+ s: 486 Busy Here", out)
      assert.matches("busy in a spec", out)
    end, 15)
  end)
end)

describe("sip.test.peer calls examples/answer.lua", function()
  after_each(function() helper.stop_all() end)

  it("raw INVITE with placeholders, 180, 200 with an SDP answer, ACK, BYE, 200", function()
    local port = helper.free_port()
    local proc = example{ helper.root .. "/examples/answer.lua", "udp:127.0.0.1:" .. port, "-n", "1" }
    local peer <close> = sip.test.peer{}
    local ua_addr = "127.0.0.1:" .. port
    sip.test.run(function()
      -- wait until the script listens
      local deadline = sip.now() + 5
      repeat sip.sleep(0.05) until proc.log():find("answering calls") or sip.now() > deadline
      local offer = peer:sdp(4010)
      assert(peer:send([[
        INVITE sip:alice@[remote_ip]:[remote_port] SIP/2.0
        Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
        Max-Forwards: 70
        From: <sip:peer@[local_ip]:[local_port]>;tag=[tag]
        To: <sip:alice@[remote_ip]:[remote_port]>
        Call-ID: [call_id]
        CSeq: 1 INVITE
        Contact: <sip:peer@[local_ip]:[local_port]>
        Content-Type: application/sdp
        Content-Length: [len]

      ]] .. offer, { to = ua_addr }))
      assert(peer:expect(180, 5))
      local ok = assert(peer:expect(200, 5))
      assert.are.equal(peer.call_id, ok.call_id)
      assert.matches("m=audio 20000 RTP/AVP 0", ok.body)
      local ack_bye = [[
        [method] sip:luasip@[remote_ip]:[remote_port] SIP/2.0
        Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
        Max-Forwards: 70
        From: <sip:peer@[local_ip]:[local_port]>;tag=[tag]
        To: [to_header]
        Call-ID: [call_id]
        CSeq: [cseq] [method]
        Content-Length: [len]
      ]]
      assert(peer:send(ack_bye, { to = ua_addr, method = "ACK", to_header = ok.to }))
      sip.sleep(0.1)
      assert(peer:send(ack_bye, { to = ua_addr, method = "BYE", to_header = ok.to, cseq = 2 }))
      local bye_ok = assert(peer:expect(200, 5))
      assert.are.equal("BYE", bye_ok.cseq_method)
      local rc, out = finish(proc)
      assert.are.equal(0, rc, out)
      assert.matches("answered %(m=audio 20000", out)
      assert.matches("ended: ", out)
    end, 15)
  end)
end)

describe("sip.test.peer", function()
  it("drops retransmissions unless asked; expect leaves what does not match queued", function()
    local ua <close> = assert(sip.ua{})
    local quiet <close> = sip.test.peer{}
    local loud <close> = sip.test.peer{ retransmissions = true }
    sip.test.run(function()
      -- nobody answers: Timer E resends at 0.5 s (then 1.5 s)
      sip.spawn(function() ua:request("OPTIONS", quiet:uri(), { timeout = 0.8 }) end)
      sip.spawn(function() ua:request("OPTIONS", loud:uri(), { timeout = 0.8 }) end)
      sip.sleep(0.9)
      assert.are.equal(1, #quiet:queued())
      assert.are.equal(2, #loud:queued())
      -- a status expected when only a request came: timeout, the request stays
      local none, why = quiet:expect(200, 0.05)
      assert.is_nil(none)
      assert.are.equal("timeout", why)
      assert.are.equal("OPTIONS", assert(quiet:expect("OPTIONS", 0.05)).method)
      assert.are.same({}, quiet:queued())
      -- a function matches too
      assert(loud:expect(function(m) return m.cseq_method == "OPTIONS" end, 0.05))
    end, 10)
  end)

  it("answers with a tag per Call-ID, Contact on 2xx to INVITE, headers and a body", function()
    local ua <close> = assert(sip.ua{})
    local peer <close> = sip.test.peer{ user = "carol" }
    sip.test.run(function()
      local res
      sip.spawn(function() res = ua:request("MESSAGE", peer:uri(), { body = "hi", timeout = 5 }) end)
      local req = assert(peer:expect("MESSAGE"))
      assert.are.equal("hi", req.body)
      local text = assert(peer:reply(req, 202, "Taken", { headers = { ["X-Test"] = { "1", "2" } },
                                                           body = "ok" }))
      assert.matches("^SIP/2%.0 202 Taken\r\n", text)
      assert.not_matches("Contact:", text)
      while not res do sip.sleep(0.01) end
      assert.are.equal(202, res.status)
      assert.are.same({ "1", "2" }, res:headers("X-Test"))
      assert.are.equal("ok", res.body)
      assert.are.equal("text/plain", res.content_type)
      assert.matches("^sip:carol@127%.0%.0%.1:%d+$", peer:uri())
    end, 10)
  end)

  it("raises for misuse, naming the public function", function()
    helper.raises("bad argument #1 to 'sip.test.peer' %(unknown option 'transprt'%)",
                  sip.test.peer, { transprt = "udp" })
    helper.raises("option 'transport' must be \"udp\" or \"tcp\"", sip.test.peer, { transport = "tls" })
    local peer <close> = sip.test.peer{}
    helper.raises("peer:expect: must be called from a coroutine run by luasip", peer.expect, peer, "INVITE")
    helper.raises("bad argument #1 to 'peer:send' %(unknown placeholder %[nope%]%)", function()
      peer:send("OPTIONS [nope] SIP/2.0\n", { to = "127.0.0.1:9" })
    end)
    helper.raises("bad argument #2 to 'peer:send' %(no destination", peer.send, peer, "x")
    helper.raises("bad argument #1 to 'sip.test.run' %(a function expected", sip.test.run, 1)
  end)
end)

describe("sip.test.run", function()
  it("returns what the flow returns, and raises its error with its traceback", function()
    assert.are.same({ 1, "two" }, { sip.test.run(function() sip.sleep(0.01); return 1, "two" end, 5) })
    local function inner() sip.sleep(0.01); error("boom in the flow") end
    local err = helper.raises("boom in the flow", sip.test.run, function() inner() end, 5)
    assert.matches("stack traceback", err)
    assert.matches("in [%a ]*'inner'", err)
    helper.raises("sip.test.run: still running after 0.2 s", sip.test.run, function() sip.sleep(5) end, 0.2)
  end)

  it("counts the flow's timers from its start, however long the spec paused before", function()
    local a <close> = assert(sip.ua{})
    local peer <close> = sip.test.peer{ retransmissions = true }
    require("sip.core").step(0)
    os.execute("sleep 0.7")   -- longer than T1: a stale clock would resend at once
    sip.test.run(function()
      sip.spawn(function() a:request("OPTIONS", peer:uri(), { timeout = 0.3 }) end)
      sip.sleep(0.35)
    end, 5)
    -- with retransmissions kept, the one request came once
    assert.are.equal(1, #peer:queued())
  end)
end)
