--- A registration's flow, with Kamailio (spec/kamailio/nat.cfg) as the
-- registrar and proxy a service in front of NATed clients runs: it binds
-- the address a REGISTER came from (fix_nated_register) and sends calls
-- for the AOR there, over the client's own TCP connection.
--
-- Bob has no TCP listener at all, as a client behind a NAT has none
-- reachable: a call reaches him only over the connection his REGISTER
-- opened. With `keepalive`, that connection pings (CRLF, RFC 5626
-- 4.4.1; Kamailio pongs) instead of closing when idle, and the call
-- placed after the idle timeout arrives on it. Without, it closes at the
-- idle timeout and the call fails at Kamailio.
local sip = require "sip"
local helper = require "helper"

local function port_of(addr)
  return tonumber(addr:match(":(%d+)$"))
end

describe("a registration's TCP flow through Kamailio", function()
  local kam
  setup(function()
    kam = helper.kamailio{ cfg = "nat.cfg", transports = { "udp", "tcp" } }
  end)
  teardown(function()
    if kam then kam.stop() end
    helper.stop_all()
  end)

  -- bob registers over TCP, waits past his idle timeout, then alice
  -- calls his AOR through Kamailio; returns what bob and alice saw
  local function call_after_idle(bob_opts)
    local bob = assert(sip.ua(bob_opts))
    local alice = assert(sip.ua{ listen = "udp:127.0.0.1:0", proxy = kam.uri })
    finally(function() bob:close(); alice:close() end)
    local seen = {}
    bob:on("INVITE", function(call)
      seen.transport = call.invite.transport
      seen.source = call.invite.source
      seen.connections = bob:stats().connections
      call:answer()
    end)
    helper.run(function()
      local reg = assert(bob:register{ registrar = kam.uri .. ";transport=tcp",
                                       aor = "sip:bob@example.com", expires = 60 })
      seen.connections_registered = bob:stats().connections
      sip.sleep(3.5)          -- past bob's idle timeout (1.5 s)
      seen.connections_later = bob:stats().connections
      local call, err = alice:invite("sip:bob@example.com",
        { sdp = sip.sdp.offer{ addr = "127.0.0.1", port = 4020 }, timeout = 15 })
      seen.status = call and 200 or err
      if call then
        assert(call:hangup())
      end
      reg:unregister()
    end, 60)
    return seen
  end

  it("stays open with keepalive past the idle timeout, and the call comes back over it", function()
    local seen = call_after_idle{ listen = "udp:127.0.0.1:0", keepalive = 0.5, idle_timeout = 1.5 }
    assert.equal(1, seen.connections_registered)
    assert.equal(1, seen.connections_later)
    assert.equal(200, seen.status)
    -- over TCP though bob listens on UDP only: his own connection
    assert.equal("TCP", seen.transport)
    assert.equal(kam.port, port_of(seen.source))
    assert.equal(1, seen.connections)
  end)

  it("closes at the idle timeout without keepalive, and the call cannot reach bob", function()
    local seen = call_after_idle{ listen = "udp:127.0.0.1:0", idle_timeout = 1.5 }
    assert.equal(1, seen.connections_registered)
    assert.equal(0, seen.connections_later)
    assert.is_nil(seen.transport)
    assert.are_not.equal(200, seen.status)
  end)
end)
