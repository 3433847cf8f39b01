--- Calls between two Lua UAs through Kamailio as a record-routing proxy
-- (spec/kamailio/proxy.cfg, started here on a free port): the route set
-- holds Kamailio's Record-Route, and every request and response within
-- the dialog (ACK, re-INVITE, BYE and their answers) goes through it.
local sip = require "sip"
local helper = require "helper"

-- Kamailio on 127.0.0.1:port, UDP and TCP, answering; stopped (its
-- run directory removed) at the end of the test
local function start_kamailio()
  local k = helper.kamailio{ cfg = "proxy.cfg", transports = { "udp", "tcp" } }
  finally(k.stop)
  return k.proc, k.port
end

describe("calls through Kamailio", function()
  for _, tr in ipairs{ "udp", "tcp" } do
    it("keep Kamailio on the route: Record-Route, ACK, re-INVITE and BYE through it (" .. tr .. ")",
       function()
      local a, b
      finally(function()
        sip.trace(false)
        helper.stop_all()
        if a then a:close() end
        if b then b:close() end
      end)
      local kam, kport = start_kamailio()
      local khop = "127.0.0.1:" .. kport
      local proxy = "sip:" .. khop .. (tr == "tcp" and ";transport=tcp" or "")
      a = assert(sip.ua{ listen = tr .. ":127.0.0.1:0", proxy = proxy })
      b = assert(sip.ua{ listen = tr .. ":127.0.0.1:0" })
      local log = {}
      sip.trace(function(dir, proto, peer, text)
        log[#log + 1] = { dir = dir, proto = proto, peer = peer, first = text:match("^[^\r\n]*"),
                          text = text }
      end)

      local callee = {}
      b:on("INVITE", function(call)
        callee.rr = call.invite:header("Record-Route")
        call:ring()
        callee.answer = { call:answer{ sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1" }) } }
        callee.routes = call.routes
        callee.why = call:wait(10)
      end)

      local caller = {}
      helper.run(function()
        sip.sleep(0.01)
        local call, err = a:invite(b:uri("bob"), { sdp = sip.sdp.offer{ addr = "127.0.0.1" },
                                                   timeout = 5 })
        assert.is_nil(err)
        caller.routes = call.routes
        caller.remote_target = call.remote_target
        local res = assert(call:hold())
        assert.are.equal(200, res.status)
        assert.are.equal("recvonly", call.remote_sdp.media[1].direction)
        res = assert(call:request("INFO", { body = "x", content_type = "text/plain" }))
        assert.are.equal(200, res.status)
        caller.hangup = { call:hangup() }
        sip.sleep(0.05)
      end, 20)

      -- both route sets are Kamailio, loose routing
      assert.is_string(callee.rr, "no Record-Route in the INVITE")
      assert.truthy(callee.rr:find(khop, 1, true), callee.rr)
      assert.truthy(caller.routes and caller.routes:find(khop, 1, true), tostring(caller.routes))
      assert.truthy(caller.routes:find(";lr", 1, true), caller.routes)
      assert.truthy(callee.routes and callee.routes:find(khop, 1, true), tostring(callee.routes))
      -- the remote target is the callee's Contact, not the proxy
      assert.truthy(caller.remote_target:find(b:address():match(":(%d+)$"), 1, true))

      assert.are.same({ true }, callee.answer)
      assert.are.same({ true }, caller.hangup)
      assert.are.equal("bye", callee.why)

      -- every message either UA sent went to Kamailio: requests to its
      -- address; responses too over UDP, and over TCP on the connection
      -- Kamailio opened (from a port of its own); none went UA to UA
      local ua_addrs = { [a:address():match("^%a+:(.*)$")] = true,
                         [b:address():match("^%a+:(.*)$")] = true }
      local byes, bye_ok, acks = 0, 0, 0
      for _, m in ipairs(log) do
        assert.is_nil(ua_addrs[m.peer], m.dir .. " " .. m.first .. " peer " .. m.peer)
        if m.dir == "out" then
          if tr == "udp" or not m.first:match("^SIP/2%.0 ") then
            assert.are.equal(khop, m.peer, m.first .. " went to " .. m.peer)
          end
          if m.first:match("^BYE ") then
            byes = byes + 1
            -- a loose route: the Request-URI is the callee, Route the proxy
            assert.truthy(m.text:match("\n[Rr]oute:[^\r\n]*" .. khop:gsub("%.", "%%.")), m.text)
          end
          if m.first:match("^ACK ") then acks = acks + 1 end
        elseif m.first:match("^SIP/2%.0 200 ") and m.text:match("\nCSeq:%s*%d+ BYE") then
          bye_ok = bye_ok + 1
        end
      end
      assert.are.equal(1, byes)
      assert.are.equal(1, bye_ok)
      assert.are.equal(2, acks)   -- the 200 to the INVITE and to the re-INVITE
      assert.is_nil(kam.done(), "kamailio exited:\n" .. kam.log())
    end)
  end

  it("carries the callee's BYE back through Kamailio (udp)", function()
    local a, b
    finally(function()
      sip.trace(false)
      helper.stop_all()
      if a then a:close() end
      if b then b:close() end
    end)
    local _, kport = start_kamailio()
    local khop = "127.0.0.1:" .. kport
    a = assert(sip.ua{ listen = "udp:127.0.0.1:0", proxy = "sip:" .. khop })
    b = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    local bye_peer
    sip.trace(function(dir, _, peer, text)
      if dir == "out" and text:match("^BYE ") then bye_peer = peer end
    end)
    local hung
    b:on("INVITE", function(call)
      assert(call:answer())
      sip.sleep(0.1)
      hung = { call:hangup() }
    end)
    helper.run(function()
      sip.sleep(0.01)
      local call = assert(a:invite(b:uri("bob"), { sdp = sip.sdp.offer{ addr = "127.0.0.1" },
                                                   timeout = 5 }))
      assert.are.equal("bye", call:wait(5))
      sip.sleep(0.05)
    end, 15)
    assert.are.same({ true }, hung)
    assert.are.equal(khop, bye_peer)
  end)
end)
