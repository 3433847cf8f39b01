--- SIP over TLS between Lua UAs in one process, and against the openssl
-- command: sips OPTIONS and calls; the chain refused when untrusted or
-- expired; the name checked per RFC 5922 against the host of the next
-- hop (IP SAN for an address, then URI SAN sip:domain, DNS SAN, the CN
-- only without any SAN, wildcards only when allowed); mutual TLS;
-- verify = false; TLS 1.2 minimum and the 1.3-only option; the
-- handshake timeout; SNI; session resumption on both sides.
--
-- The certificates are made at load time by spec/tlscerts.lua.
--
-- Which name is checked: the host of the URI the request is sent to,
-- that is the proxy (opts.proxy or the UA's proxy) when there is one,
-- else the Request-URI. A request for sips:example.test sent through
-- proxy sips:127.0.0.1:PORT is checked against 127.0.0.1 (an IP SAN),
-- never against example.test: RFC 5922 4 wants the identity of the
-- server we connect to, and that server is the proxy.
--
-- Names that resolve here: only single-label names (/etc/hosts has
-- localhost, and no resolver answers for *.example.test), so the specs
-- use "localhost" for the DNS, URI and CN checks. For wildcards the name
-- needs three labels: "127.0.1" is the inet_aton spelling of 127.0.0.1,
-- which getaddrinfo resolves but which is not an address literal for
-- inet_pton, so the library checks it as a DNS name, and the wildcard
-- certificate carries DNS:*.0.1 next to DNS:*.example.test.
local sip = require "sip"
local helper = require "helper"
local tlscerts = require "tlscerts"

local C = tlscerts.generate()

-- Stop a process started with helper.spawn: its whole process group
local function stop(proc)
  os.execute("kill -TERM -" .. proc.pid .. " 2>/dev/null")
  for _ = 1, 20 do
    if proc.done() then return end
    helper.spin(0.05)
  end
  os.execute("kill -KILL -" .. proc.pid .. " 2>/dev/null")
end

local function port_of(ua)
  return tonumber(ua:address():match(":(%d+)$"))
end

local function merge(a, b)
  local t = {}
  for k, v in pairs(a or {}) do t[k] = v end
  for k, v in pairs(b or {}) do t[k] = v end
  return t
end

local uas = {}
local function track(ua)
  uas[#uas + 1] = ua
  return ua
end
local function close_all()
  helper.stop_all()
  for _, ua in ipairs(uas) do ua:close() end
  uas = {}
end

-- a Lua TLS server presenting `leaf`; served[] collects what it received
local function tls_server(leaf, tls, served)
  local ua = assert(sip.ua{ listen = "tls:127.0.0.1:0",
    tls = merge({ cert = leaf.cert, key = leaf.key, cafile = C.ca }, tls) })
  track(ua)
  ua:on("OPTIONS", function(req)
    if served then
      served[#served + 1] = { uri = req.uri, transport = req.transport, tls = req.tls }
    end
    return 200
  end)
  return ua, port_of(ua)
end

-- a client UA (UDP listener only: TLS goes out on connections of its own)
local function tls_client(tls, extra)
  return track(assert(sip.ua(merge({ listen = "udp:127.0.0.1:0",
    tls = merge({ cafile = C.ca }, tls) }, extra))))
end

local function options(ua, uri, opts)
  local res, err
  helper.run(function()
    res, err = ua:request("OPTIONS", uri, merge({ timeout = 5 }, opts))
  end, 15)
  return res, err
end

-- the name a wildcard certificate can cover (see the comment at the top)
local WILDCARD_HOST = "127.0.1"

describe("TLS", function()
  teardown(function() C.remove() end)

  describe("between two Lua UAs", function()
    after_each(close_all)

    it("answers sips: OPTIONS, and the server sees the request came over TLS", function()
      local served = {}
      local _, port = tls_server(C.server, nil, served)
      local cli = tls_client()
      local res, err = options(cli, "sips:127.0.0.1:" .. port)
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      assert.are.equal("tls", res.transport:lower())
      -- sip:...;transport=tls is TLS too, and by name
      res, err = options(cli, "sip:localhost:" .. port .. ";transport=tls")
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      assert.are.equal(2, #served)
      assert.are.equal("sips:127.0.0.1:" .. port, served[1].uri)
      assert.are.equal("tls", served[1].transport:lower())
    end)

    it("gives req.tls on every request received over TLS, without a client certificate too", function()
      local served = {}
      local _, port = tls_server(C.server, nil, served)
      local res, err = options(tls_client(), "sips:127.0.0.1:" .. port)
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      -- over TLS req.tls is a table: no peer certificate, so no subject
      -- and not verified
      assert.is_table(served[1].tls)
      assert.is_nil(served[1].tls.peer_subject)
      assert.is_false(served[1].tls.verified)
    end)

    it("has no req.tls on a request received over UDP", function()
      local ua = track(assert(sip.ua{ listen = "udp:127.0.0.1:0" }))
      local seen = "unset"
      ua:on("OPTIONS", function(req) seen = req.tls; return 200 end)
      local res = options(tls_client(), ua:uri())
      assert.are.equal(200, res.status)
      assert.is_nil(seen)
    end)

    it("places a call with SDP over TLS, hung up by either side", function()
      local function ua()
        return track(assert(sip.ua{ listen = "tls:127.0.0.1:0",
          tls = { cert = C.server.cert, key = C.server.key, cafile = C.ca } }))
      end
      local a, b = ua(), ua()
      local seen = {}
      b:on("INVITE", function(call)
        local s = { transport = call.invite.transport, uri = call.invite.uri }
        seen[#seen + 1] = s
        call:ring()
        local answer = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1", port = 5002 })
        s.answered = call:answer{ sdp = answer }
        if call.invite:header("X-Hangup") == "callee" then
          sip.sleep(0.1)
          s.hangup = { call:hangup() }
        else
          s.why = call:wait(10)
        end
      end)
      local offer = sip.sdp.offer{ addr = "127.0.0.1", port = 4002 }
      helper.run(function()
        -- the caller hangs up; sips: Request-URI
        local call, err = a:invite("sips:bob@127.0.0.1:" .. port_of(b), { sdp = offer, timeout = 5 })
        assert.is_nil(err)
        assert.are.equal("confirmed", call.state)
        assert.are.equal(5002, call.remote_sdp.media[1].port)
        sip.sleep(0.1)
        assert.is_true(call:hangup())
        -- the callee hangs up: its BYE opens a TLS connection of its own
        -- to the caller's Contact
        call, err = a:invite(b:uri("bob"), { sdp = offer, timeout = 5,
                                             headers = { ["X-Hangup"] = "callee" } })
        assert.is_nil(err)
        assert.are.equal("bye", call:wait(5))
        sip.sleep(0.1)
      end, 20)
      assert.are.equal(2, #seen)
      assert.are.equal("tls", seen[1].transport:lower())
      assert.are.equal("sips:bob@127.0.0.1:" .. port_of(b), seen[1].uri)
      assert.is_true(seen[1].answered)
      assert.are.equal("bye", seen[1].why)
      assert.are.same({ true }, seen[2].hangup)
    end)

    it("puts sips: Contacts in a call to a sips: URI (RFC 3261 8.1.1.8, 12.1.1)", function()
      local function ua()
        return track(assert(sip.ua{ listen = "tls:127.0.0.1:0",
          tls = { cert = C.server.cert, key = C.server.key, cafile = C.ca } }))
      end
      local a, b = ua(), ua()
      local uac_contact
      b:on("INVITE", function(call)
        uac_contact = call.invite:header("Contact")
        call:answer()
        call:wait(5)
      end)
      local target
      helper.run(function()
        local call, err, res = a:invite("sips:bob@127.0.0.1:" .. port_of(b),
          { sdp = sip.sdp.offer{ addr = "127.0.0.1", port = 4004 }, timeout = 5 })
        assert.is_nil(err, res and res.status)
        target = call.remote_target
        call:hangup()
      end, 10)
      -- the INVITE's Contact, and the 2xx's (the remote target)
      assert.matches("^<?sips:", uac_contact)
      assert.matches("^<?sips:", target)
    end)

    describe("refuses the server", function()
      it("when its chain leads to a CA we do not trust", function()
        local served = {}
        local _, port = tls_server(C.other, nil, served)
        local res, err = options(tls_client(), "sips:localhost:" .. port)
        assert.is_nil(res)
        assert.are.equal("tls: certificate verify failed: unable to get local issuer certificate", err)
        assert.are.equal(0, #served)
      end)

      it("when the system store is all we trust (no cafile)", function()
        local _, port = tls_server(C.server)
        local cli = track(assert(sip.ua{ listen = "udp:127.0.0.1:0" }))
        local res, err = options(cli, "sips:127.0.0.1:" .. port)
        assert.is_nil(res)
        assert.matches("^tls: certificate verify failed", err)
      end)

      it("when its certificate has expired", function()
        local served = {}
        local _, port = tls_server(C.expired, nil, served)
        local res, err = options(tls_client(), "sips:127.0.0.1:" .. port)
        assert.is_nil(res)
        assert.are.equal("tls: certificate verify failed: certificate has expired", err)
        assert.are.equal(0, #served)
      end)

      it("when its certificate names another host", function()
        local served = {}
        local _, port = tls_server(C.wrong, nil, served)
        local cli = tls_client()
        local res, err = options(cli, "sips:127.0.0.1:" .. port)
        assert.is_nil(res)
        assert.are.equal("tls: name mismatch: 127.0.0.1", err)
        res, err = options(cli, "sip:localhost:" .. port .. ";transport=tls")
        assert.is_nil(res)
        assert.are.equal("tls: name mismatch: localhost", err)
        assert.are.equal(0, #served)
        -- the refused connections are gone
        assert.are.equal(0, cli:stats().connections)
      end)

      it("when only its CN names the host but it has a SAN", function()
        local _, port = tls_server(C.cn_ignored)
        local res, err = options(tls_client(), "sips:localhost:" .. port)
        assert.is_nil(res)
        assert.are.equal("tls: name mismatch: localhost", err)
      end)

      it("when a connection made for one name would carry a request for another", function()
        -- RFC 5922 / 5923: a connection may carry requests for a domain
        -- only if the server's certificate covers that domain. This one
        -- names 127.0.0.1 only; a fresh connection to "localhost" would
        -- fail, so the open one must not be borrowed for it.
        local served = {}
        local _, port = tls_server(C.ip_only, nil, served)
        local cli = tls_client()
        local res, err = options(cli, "sips:127.0.0.1:" .. port)
        assert.is_nil(err)
        assert.are.equal(200, res.status)
        res, err = options(cli, "sips:localhost:" .. port)
        assert.is_nil(res)
        assert.are.equal("tls: name mismatch: localhost", err)
        assert.are.equal(1, #served)
      end)
    end)

    describe("checks the name of the next hop", function()
      it("against a DNS SAN, and an IP SAN for an address", function()
        local _, port = tls_server(C.server)
        local cli = tls_client()
        assert.are.equal(200, (options(cli, "sips:localhost:" .. port)).status)
        local cli2 = tls_client()
        assert.are.equal(200, (options(cli2, "sips:127.0.0.1:" .. port)).status)
      end)

      it("against a URI SAN sip:domain", function()
        local _, port = tls_server(C.uri_localhost)
        local res, err = options(tls_client(), "sips:localhost:" .. port)
        assert.is_nil(err)
        assert.are.equal(200, res.status)
        -- an address is never matched by a URI SAN
        res, err = options(tls_client(), "sips:127.0.0.1:" .. port)
        assert.is_nil(res)
        assert.are.equal("tls: name mismatch: 127.0.0.1", err)
      end)

      it("against the CN when the certificate has no SAN", function()
        local _, port = tls_server(C.cn_only)
        local res, err = options(tls_client(), "sips:localhost:" .. port)
        assert.is_nil(err)
        assert.are.equal(200, res.status)
      end)

      it("which is the proxy's host, not the Request-URI's domain", function()
        -- sips:example.test through proxy sips:127.0.0.1:PORT: the proxy
        -- is the server we connect to, so 127.0.0.1 is the name checked.
        -- The server certificate has IP:127.0.0.1 (and URI:sip:example.test):
        -- accepted, and the Request-URI arrives as it was.
        local served = {}
        local _, port = tls_server(C.server, nil, served)
        local res, err = options(tls_client(), "sips:example.test",
                                 { proxy = "sips:127.0.0.1:" .. port })
        assert.is_nil(err)
        assert.are.equal(200, res.status)
        assert.are.equal("sips:example.test", served[1].uri)
        -- the UA's own proxy is the next hop the same way
        local cli = tls_client(nil, { proxy = "sips:127.0.0.1:" .. port })
        res, err = options(cli, "sips:example.test")
        assert.is_nil(err)
        assert.are.equal(200, res.status)
        -- a certificate whose only identity is URI:sip:example.test does
        -- not name the proxy 127.0.0.1: refused, naming the hop
        local _, port2 = tls_server(C.uri_example)
        res, err = options(tls_client(), "sips:example.test", { proxy = "sips:127.0.0.1:" .. port2 })
        assert.is_nil(res)
        assert.are.equal("tls: name mismatch: 127.0.0.1", err)
      end)

      it("refusing a wildcard by default and accepting it with allow_wildcard", function()
        local host = WILDCARD_HOST
        local _, port = tls_server(C.wildcard)
        local uri = "sips:" .. host .. ":" .. port
        local res, err = options(tls_client(), uri)
        assert.is_nil(res)
        assert.are.equal("tls: name mismatch: " .. host, err)
        res, err = options(tls_client{ allow_wildcard = true }, uri)
        assert.is_nil(err)
        assert.are.equal(200, res.status)
        -- a wildcard covers one label, never the bare domain
        local _, port2 = tls_server(C.wildcard)
        res, err = options(tls_client{ allow_wildcard = true }, "sips:localhost:" .. port2)
        assert.is_nil(res)
        assert.are.equal("tls: name mismatch: localhost", err)
      end)
    end)

    describe("mutual TLS (verify_client = true)", function()
      it("accepts a client certificate from a trusted CA and shows its subject", function()
        local served = {}
        local _, port = tls_server(C.server, { verify_client = true }, served)
        local cli = tls_client{ cert = C.client.cert, key = C.client.key }
        local res, err = options(cli, "sips:127.0.0.1:" .. port)
        assert.is_nil(err)
        assert.are.equal(200, res.status)
        assert.is_table(served[1].tls)
        assert.matches("CN=luasip client", served[1].tls.peer_subject, 1, true)
        assert.is_true(served[1].tls.verified)
      end)

      it("refuses a client without a certificate", function()
        local served = {}
        local _, port = tls_server(C.server, { verify_client = true }, served)
        local res, err = options(tls_client(), "sips:127.0.0.1:" .. port)
        assert.is_nil(res)
        assert.matches("^tls: ", err)
        assert.matches("certificate required", err, 1, true)
        assert.are.equal(0, #served)
      end)

      it("refuses a client certificate from a CA it does not trust", function()
        local served = {}
        local _, port = tls_server(C.server, { verify_client = true }, served)
        local cli = tls_client{ cert = C.other_client.cert, key = C.other_client.key }
        local res, err = options(cli, "sips:127.0.0.1:" .. port)
        assert.is_nil(res)
        assert.matches("^tls: ", err)
        assert.matches("unknown ca", err, 1, true)
        assert.are.equal(0, #served)
      end)
    end)

    it("connects to anyone with verify = false, and warns once", function()
      local warnings = {}
      sip.log("warn", function(level, msg)
        if level == "warn" then warnings[#warnings + 1] = msg end
      end)
      finally(function() sip.log("error", false) end)
      local _, port = tls_server(C.other)           -- untrusted CA
      local _, port2 = tls_server(C.wrong)          -- wrong name
      local cli = tls_client{ verify = false }
      local res, err = options(cli, "sips:127.0.0.1:" .. port)
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      res, err = options(cli, "sips:127.0.0.1:" .. port2)
      assert.is_nil(err)
      assert.are.equal(200, res.status)
      local about = {}
      for _, w in ipairs(warnings) do
        if w:find("verif", 1, true) then about[#about + 1] = w end
      end
      assert.are.equal(1, #about, table.concat(warnings, "\n"))
      assert.matches("tls", about[1], 1, true)
    end)

    it("talks TLS 1.3 between a 1.3-only UA and a default one, both ways", function()
      local _, port = tls_server(C.server, { tls13 = true })
      assert.are.equal(200, (options(tls_client(), "sips:127.0.0.1:" .. port)).status)
      local _, port2 = tls_server(C.server)
      assert.are.equal(200, (options(tls_client{ tls13 = true }, "sips:127.0.0.1:" .. port2)).status)
    end)

    it("closes a client that connects and sends nothing at the handshake timeout", function()
      local socket = require "socket"
      local srv, port = tls_server(C.server, { handshake_timeout = 1 })
      local s = assert(socket.tcp())
      s:settimeout(2)
      assert(s:connect("127.0.0.1", port))
      s:settimeout(0)
      local t0 = socket.gettime()
      local closed_after, conns
      helper.run(function()
        sip.sleep(0.2)
        conns = srv:stats().connections
        while socket.gettime() - t0 < 4 do
          local _, err = s:receive(1)
          if err == "closed" then
            closed_after = socket.gettime() - t0
            break
          end
          sip.sleep(0.02)
        end
      end, 10)
      s:close()
      assert.are.equal(1, conns)
      assert.is_number(closed_after, "still open after 4 s")
      assert.is_true(closed_after >= 0.9 and closed_after <= 2.0, "closed after " .. tostring(closed_after))
      assert.are.equal(0, srv:stats().connections)
    end)

    it("refuses a tls: listener without a certificate, and unreadable files", function()
      local ua, err = sip.ua{ listen = "tls:127.0.0.1:0" }
      if ua then track(ua) end
      assert.is_nil(ua)
      assert.matches("tls", err, 1, true)
      ua, err = sip.ua{ listen = "tls:127.0.0.1:0",
                        tls = { cert = C.dir .. "/nope.pem", key = C.server.key } }
      if ua then track(ua) end
      assert.is_nil(ua)
      assert.matches("^tls: cannot load the certificate", err)
      ua, err = sip.ua{ listen = "tls:127.0.0.1:0", tls = { cert = C.server.cert, key = C.client.key } }
      if ua then track(ua) end
      assert.is_nil(ua)
      assert.matches("^tls: cannot load the private key", err)
    end)
  end)

  describe("against the openssl command", function()
    after_each(close_all)

    local function s_client(port, args, sess_wait)
      -- stdin open a moment: TLS 1.3 tickets arrive after the handshake
      local argv = { "openssl", "s_client", "-connect", "127.0.0.1:" .. port, "-CAfile", C.ca }
      for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
      local cmd = {}
      for i, a in ipairs(argv) do cmd[i] = helper.shell_quote(a) end
      local proc = helper.spawn({ "sh", "-c", "sleep " .. (sess_wait or 0.3) .. " | " ..
                                  table.concat(cmd, " ") }, "s_client")
      local rc = proc:wait(10)
      return rc, proc.log()
    end

    it("a 1.3-only server refuses a TLS 1.2 client; a default one refuses TLS 1.1", function()
      local _, port = tls_server(C.server, { tls13 = true })
      local rc, log = s_client(port, { "-tls1_2" })
      assert.are_not.equal(0, rc, log)
      assert.matches("alert protocol version", log, 1, true)
      rc, log = s_client(port, { "-tls1_3" })
      assert.are.equal(0, rc, log)
      assert.matches("Verify return code: 0 (ok)", log, 1, true)

      local _, port2 = tls_server(C.server)
      rc, log = s_client(port2, { "-tls1_2" })
      assert.are.equal(0, rc, log)
      rc, log = s_client(port2, { "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0" })
      assert.are_not.equal(0, rc, log)
      assert.matches("alert protocol version", log, 1, true)
    end)

    for _, v in ipairs{ "tls1_2", "tls1_3" } do
      it("a Lua server resumes a session (" .. v .. ")", function()
        local _, port = tls_server(C.server)
        local sess = helper.tmp .. "/sess-" .. v .. "-" .. port
        finally(function() os.remove(sess) end)
        local rc, log = s_client(port, { "-" .. v, "-sess_out", sess })
        assert.are.equal(0, rc, log)
        assert.matches("\nNew, ", log, 1, true)
        rc, log = s_client(port, { "-" .. v, "-sess_in", sess })
        assert.are.equal(0, rc, log)
        assert.matches("\nReused, ", log, 1, true)
      end)
    end

    -- openssl s_server: prints the SNI it got (-tlsextdebug), each request,
    -- and "Reused session-id" for a resumed session; it never answers SIP.
    -- It stops after two connections, or at the end of its stdin.
    local function s_server(v, port)
      local argv = { "openssl", "s_server", "-" .. v, "-accept", "127.0.0.1:" .. port,
        "-cert", C.server.cert, "-key", C.server.key, "-naccept", "2", "-tlsextdebug" }
      local cmd = {}
      for i, a in ipairs(argv) do cmd[i] = helper.shell_quote(a) end
      local proc = helper.spawn({ "sh", "-c", "sleep 10 | " .. table.concat(cmd, " ") }, "s_server")
      finally(function() stop(proc) end)
      helper.spin(0.4)
      return proc
    end

    -- s_server's log once it has served its two connections
    local function served_log(proc)
      for _ = 1, 100 do
        if proc.log():find("server accepts that finished", 1, true) then break end
        helper.spin(0.05)
      end
      return proc.log()
    end

    for _, v in ipairs{ "tls1_2", "tls1_3" } do
      it("a Lua client sends SNI and resumes its session on a new connection (" .. v .. ")", function()
        local port = helper.free_port()
        local srv = s_server(v, port)
        -- idle_timeout closes the client's connection between the two
        local cli = tls_client(nil, { idle_timeout = 0.5 })
        local uri = "sips:localhost:" .. port
        helper.run(function()
          local _, err = cli:request("OPTIONS", uri, { timeout = 0.3 })
          assert.are.equal("timeout", err)           -- s_server does not speak SIP
          sip.sleep(1)
          assert.are.equal(0, cli:stats().connections)
          _, err = cli:request("OPTIONS", uri, { timeout = 0.3 })
          assert.are.equal("timeout", err)
        end, 10)
        local log = served_log(srv)
        local _, n = log:gsub("OPTIONS sips:localhost:" .. port .. " SIP/2.0", "")
        assert.are.equal(2, n, log)
        assert.matches('TLS client extension "server name"', log, 1, true)
        assert.matches(".localhost", log, 1, true)
        assert.matches("Reused session-id", log, 1, true)
      end)
    end

    it("a 1.3-only Lua client refuses a TLS 1.2 server", function()
      local port = helper.free_port()
      s_server("tls1_2", port)
      local res, err = options(tls_client{ tls13 = true }, "sips:localhost:" .. port)
      assert.is_nil(res)
      assert.matches("^tls: ", err)
    end)
  end)
end)
