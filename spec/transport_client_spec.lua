--- Transport set-up bugs of issue 13 (items 8, part, and 11), one test
-- per bug:
--
-- * TCP and TLS go out on connections of their own, from an ephemeral
--   port: a UA needs no listener of that transport to send over it.
--   Before, a UA whose only listener was TCP failed a ;transport=tls
--   request with "transport: no TLS listener for IPv4" (only a UDP
--   listener stood in). The request's Via and Contact name the listener
--   that does exist, the Contact with that listener's own transport, so
--   the peer's requests within a dialog still reach us.
-- * A UA without a tls table makes TLS client connections with the
--   defaults: the system store, peer verification on (RFC 5922).
-- * A listen address may name its host (udp:localhost:0): the name is
--   looked up when the UA is made, and its first address is used, the
--   one a request to sip:NAME:PORT goes to (so the two agree).
-- * One PEM file holding the certificate and its key serves tls.cert
--   without tls.key, and the errors say what is required.
--
-- The certificates are made at load time by spec/tlscerts.lua.
local sip = require "sip"
local helper = require "helper"
local tlscerts = require "tlscerts"

local C = tlscerts.generate()

local function port_of(ua)
  return tonumber(ua:address():match(":(%d+)$"))
end

local function host_of(ua)
  return ua:address():match("^%a+:(.*):%d+$")
end

local uas = {}
local function track(ua)
  uas[#uas + 1] = ua
  return ua
end
local function close_all()
  for _, ua in ipairs(uas) do ua:close() end
  uas = {}
end

local function cat(path, ...)
  local out = assert(io.open(path, "w"))
  for _, p in ipairs{ ... } do
    local f = assert(io.open(p))
    out:write(f:read("a"))
    f:close()
  end
  out:close()
  return path
end

-- a Lua TLS server presenting C.server; seen[] collects what it received
local function tls_server(seen, listen)
  local ua = track(assert(sip.ua{ listen = listen or "tls:127.0.0.1:0",
    tls = { cert = C.server.cert, key = C.server.key, cafile = C.ca } }))
  ua:on("OPTIONS", function(req)
    seen[#seen + 1] = { transport = req.transport, via = req:header("Via") }
    return 200
  end)
  return ua, port_of(ua)
end

local function options(ua, uri)
  local res, err
  helper.run(function()
    res, err = ua:request("OPTIONS", uri, { timeout = 5 })
  end, 15)
  return res, err
end

describe("transport set-up", function()
  teardown(function() C.remove() end)
  after_each(close_all)

  describe("a TLS client without a TLS listener", function()
    it("sends ;transport=tls from a UA whose only listener is TCP (was: no TLS listener for IPv4)", function()
      local seen = {}
      local _, port = tls_server(seen)
      local cli = track(assert(sip.ua{ listen = "tcp:127.0.0.1:0", tls = { cafile = C.ca } }))
      local res, err = options(cli, "sip:localhost:" .. port .. ";transport=tls")
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      -- sips: too, checked against the IP SAN
      res, err = options(cli, "sips:127.0.0.1:" .. port)
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      assert.are.equal(2, #seen)
      assert.are.equal("tls", seen[1].transport:lower())
      -- the Via names the listener we have (the answer comes back on
      -- the connection whatever it says)
      assert.matches("^SIP/2.0/TLS 127%.0%.0%.1:" .. port_of(cli) .. ";", seen[1].via)
    end)

    it("sends ;transport=tls from a UA whose only listener is UDP", function()
      local seen = {}
      local _, port = tls_server(seen)
      local cli = track(assert(sip.ua{ listen = "udp:127.0.0.1:0", tls = { cafile = C.ca } }))
      local res, err = options(cli, "sip:localhost:" .. port .. ";transport=tls")
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      assert.matches("^SIP/2.0/TLS 127%.0%.0%.1:" .. port_of(cli) .. ";", seen[1].via)
    end)

    it("calls over TLS from a TCP-only UA with a Contact it can be reached at: the callee's BYE arrives", function()
      local b, port = tls_server({})
      local a = track(assert(sip.ua{ listen = "tcp:127.0.0.1:0", tls = { cafile = C.ca } }))
      local contact, hangup
      b:on("INVITE", function(call)
        contact = call.invite:header("Contact")
        call:answer()
        sip.sleep(0.1)
        hangup = { call:hangup() }
      end)
      local why
      helper.run(function()
        local call, err = a:invite("sip:bob@localhost:" .. port .. ";transport=tls",
          { sdp = sip.sdp.offer{ addr = "127.0.0.1", port = 4010 }, timeout = 5 })
        assert.is_nil(err)
        why = call:wait(5)
        sip.sleep(0.1)
      end, 15)
      assert.are.equal("<sip:luasip@127.0.0.1:" .. port_of(a) .. ";transport=tcp>", contact)
      assert.are.same({ true }, hangup)
      assert.are.equal("bye", why)
    end)

    it("verifies the server when the UA has no tls table (system store, verification on)", function()
      local _, port = tls_server({})
      local cli = track(assert(sip.ua{ listen = "tcp:127.0.0.1:0" }))
      -- the test CA is in no system store: refused, and for that reason
      local res, err = options(cli, "sip:localhost:" .. port .. ";transport=tls")
      assert.is_nil(res)
      assert.matches("^tls: certificate verify failed", err)
    end)

    it("still needs a UDP listener to send over UDP, and a listener of the family for TCP/TLS", function()
      local cli = track(assert(sip.ua{ listen = "tcp:127.0.0.1:0" }))
      local res, err = options(cli, "sip:127.0.0.1:9;transport=udp")
      assert.is_nil(res)
      assert.are.equal("transport: no UDP listener for IPv4", err)
      res, err = options(cli, "sip:[::1]:9;transport=tls")
      assert.is_nil(res)
      assert.are.equal("transport: no listener for IPv6", err)
    end)
  end)

  describe("listen addresses", function()
    it("resolves a host name at listen time: udp:localhost:0 (was: bad listen address)", function()
      local ua = track(assert(sip.ua{ listen = "udp:localhost:0" }))
      -- localhost's first address: 127.0.0.1 here (/etc/hosts), ::1 where
      -- the system orders that first
      local host = host_of(ua)
      assert.is_truthy(host == "127.0.0.1" or host == "[::1]", ua:address())
      assert.matches("^udp:" .. host:gsub("[%.%[%]]", "%%%0") .. ":%d+$", ua:address())
      -- a request to sip:localhost:PORT goes to that same address
      local cli = track(assert(sip.ua{ listen = "udp:localhost:0" }))
      local res, err = options(cli, "sip:localhost:" .. port_of(ua))
      assert.is_nil(err)
      assert.are.equal(200, res.status)
    end)

    it("resolves a host name for tcp: and tls: listeners too", function()
      local seen = {}
      local srv, port = tls_server(seen, { "tls:localhost:0", "tcp:localhost:0" })
      assert.matches("^tls:", srv:address(1))
      assert.matches("^tcp:", srv:address(2))
      local cli = track(assert(sip.ua{ listen = "tcp:localhost:0", tls = { cafile = C.ca } }))
      local res, err = options(cli, "sip:localhost:" .. port .. ";transport=tls")
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      res, err = options(cli, srv:uri(nil, 2))
      assert.is_nil(err)
      assert.are.equal(200, res.status)
    end)

    it("fails on a name that does not resolve, saying so", function()
      local ua, err = sip.ua{ listen = "udp:nosuch.invalid:0" }
      if ua then track(ua) end
      assert.is_nil(ua)
      assert.are.equal("listen udp:nosuch.invalid:0: cannot resolve the host of listen address "
                       .. "'udp:nosuch.invalid:0'", err)
      ua, err = sip.ua{ listen = "udp:127.0.0.1" }
      if ua then track(ua) end
      assert.is_nil(ua)
      assert.matches("bad listen address", err, 1, true)
      ua, err = sip.ua{ listen = "udp:[localhost]:0" }
      if ua then track(ua) end
      assert.is_nil(ua)
      assert.matches("bad listen address", err, 1, true)
    end)
  end)

  describe("tls.cert", function()
    it("listens with one PEM holding the certificate and its key, without tls.key (either order)", function()
      local after = cat(C.dir .. "/combined.pem", C.server.cert, C.server.key)
      local before = cat(C.dir .. "/key_first.pem", C.server.key, C.server.cert)
      local cli = track(assert(sip.ua{ listen = "udp:127.0.0.1:0", tls = { cafile = C.ca } }))
      for _, pem in ipairs{ after, before } do
        local srv, err = sip.ua{ listen = "tls:127.0.0.1:0", tls = { cert = pem } }
        assert.is_nil(err)
        track(srv)
        local res
        res, err = options(cli, "sips:127.0.0.1:" .. port_of(srv))
        assert.is_nil(err)
        assert.are.equal(200, res.status)
      end
    end)

    it("says what a tls: listener needs (was: needs tls.cert and tls.key)", function()
      local ua, err = sip.ua{ listen = "tls:127.0.0.1:0", tls = { cafile = C.ca } }
      if ua then track(ua) end
      assert.is_nil(ua)
      assert.matches("needs tls.cert", err, 1, true)
      assert.not_matches("tls.cert and tls.key", err, 1, true)
      -- a certificate alone, its key nowhere
      ua, err = sip.ua{ listen = "tls:127.0.0.1:0", tls = { cert = C.server.cert } }
      if ua then track(ua) end
      assert.is_nil(ua)
      assert.are.equal("tls: cannot load the private key: none in tls.cert's file "
                       .. "(add it to that PEM file, or give tls.key)", err)
      ua, err = sip.ua{ listen = "tls:127.0.0.1:0", tls = { cert = C.server.cert, key = C.server.cert } }
      if ua then track(ua) end
      assert.is_nil(ua)
      assert.are.equal("tls: cannot load the private key: no private key in tls.key's file", err)
      -- a key of another certificate is still a mismatch
      ua, err = sip.ua{ listen = "tls:127.0.0.1:0",
                        tls = { cert = cat(C.dir .. "/mismatch.pem", C.server.cert, C.client.key) } }
      if ua then track(ua) end
      assert.is_nil(ua)
      assert.matches("^tls: cannot load the private key: key values mismatch", err)
    end)
  end)
end)
