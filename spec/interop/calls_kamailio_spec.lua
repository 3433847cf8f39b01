--- Calls between two Lua UAs through Kamailio as a record-routing proxy
-- (spec/kamailio/proxy.cfg, started here on a free port): the route set
-- holds Kamailio's Record-Route, and every request and response within
-- the dialog (ACK, re-INVITE, BYE and their answers) goes through it.
local sip = require "sip"
local helper = require "helper"

-- where this Kamailio keeps its modules
local function module_path()
  local p = io.popen("kamailio -h 2>&1")
  local help = p:read("a")
  p:close()
  local candidates = { help:match("%-L path%s+Modules search path %(default: ([^)]+)%)") }
  local g = io.popen("ls -d /usr/lib/*/kamailio/modules /usr/lib/kamailio/modules " ..
                     "/usr/local/lib*/kamailio/modules 2>/dev/null")
  for line in g:lines() do candidates[#candidates + 1] = line end
  g:close()
  for _, dir in ipairs(candidates) do
    local f = io.open(dir .. "/tm.so")
    if f then
      f:close()
      return dir
    end
  end
  error("kamailio modules (tm.so) not found in: " .. table.concat(candidates, ", "))
end

-- start Kamailio on 127.0.0.1:port (UDP and TCP) and wait until it answers
local function start_kamailio(port)
  -- this configuration writes nothing there (no ctl, no fifo), so one
  -- directory serves every run
  local rundir = helper.tmp .. "/kamailio-run"
  os.execute("mkdir -p '" .. rundir .. "'")
  local proc = helper.spawn({ "kamailio", "-f", helper.root .. "/spec/kamailio/proxy.cfg",
    "-DD", "-E", "-n", "1", "-L", module_path(), "-Y", rundir, "-w", rundir,
    "-l", "udp:127.0.0.1:" .. port, "-l", "tcp:127.0.0.1:" .. port,
    "-m", "32", "-M", "4" }, "kamailio")
  local probe = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
  local up = false
  local ok, err = pcall(helper.run, function()
    local deadline = sip.now() + 10
    while sip.now() < deadline and not proc.done() do
      local res = probe:request("OPTIONS", "sip:127.0.0.1:" .. port, { timeout = 0.3 })
      if res and res.status == 200 then
        up = true
        return
      end
      sip.sleep(0.1)
    end
  end, 15)
  probe:close()
  if not ok then error(err, 0) end
  assert(up, "kamailio did not come up:\n" .. proc.log())
  return proc
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
      local kport = helper.free_port()
      local kam = start_kamailio(kport)
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
    local kport = helper.free_port()
    start_kamailio(kport)
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
