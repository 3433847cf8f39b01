--- Kamailio (tls module) as the real TLS peer of Lua UAs, acting as a
-- record-routing proxy between TLS and UDP:
--
--   Lua UAC --TLS--> Kamailio --UDP--> Lua UAS
--   Lua UAC --UDP--> Kamailio --TLS--> Lua TLS UAS (Kamailio presents a
--                                       client certificate, verified)
--
-- OPTIONS and calls hung up from either end, and the chain refused both
-- ways when the CA is not trusted. The certificates come from
-- spec/tlscerts.lua; the Kamailio configuration (kamailio.cfg, tls.cfg)
-- is written next to them at test time. Needs Debian's
-- kamailio-tls-modules.
--
-- (SIPp is not used here: Debian builds it without TLS.)
local sip = require "sip"
local helper = require "helper"
local tlscerts = require "tlscerts"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- Kamailio's TLS: its server side presents the localhost/127.0.0.1
-- certificate and asks for nothing; its client side presents the client
-- certificate and verifies servers against the test CA.
local function tls_cfg(C)
  return table.concat({
    "[server:default]",
    "method = TLSv1.2+",
    "verify_certificate = no",
    "require_certificate = no",
    "certificate = " .. C.server.cert,
    "private_key = " .. C.server.key,
    "ca_list = " .. C.ca,
    "",
    "[client:default]",
    "method = TLSv1.2+",
    "verify_certificate = yes",
    "require_certificate = yes",
    "certificate = " .. C.client.cert,
    "private_key = " .. C.client.key,
    "ca_list = " .. C.ca,
    "" }, "\n")
end

-- A stateful proxy: answers OPTIONS to itself, drops our preloaded
-- Route, record-routes INVITEs (double Record-Route when the transport
-- changes) and relays to the Request-URI; in-dialog by loose_route().
local function kamailio_cfg(tls_path)
  return [[
#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
enable_tls=yes
auto_aliases=no

loadmodule "tls.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "textops.so"

modparam("tls", "config", "]] .. tls_path .. [[")
# a next hop that cannot be reached gets 408 in 3 s rather than 30
modparam("tm", "fr_timer", 3000)

request_route {
  if (!mf_process_maxfwd_header("10")) {
    sl_send_reply("483", "Too Many Hops");
    exit;
  }
  if (has_totag()) {
    if (loose_route()) {
      t_relay();
      exit;
    }
    if (method == "ACK") {
      if (t_check_trans()) { t_relay(); }
      exit;
    }
    sl_send_reply("404", "Not Here");
    exit;
  }
  if (method == "CANCEL") {
    if (t_check_trans()) { t_relay(); }
    exit;
  }
  if (method == "OPTIONS" && uri == myself && $rU == $null) {
    sl_send_reply("200", "Kamailio Here");
    exit;
  }
  remove_hf("Route");
  if (method == "INVITE") { record_route(); }
  if (!t_relay()) { sl_reply_error(); }
  exit;
}
]]
end

local function two_ports()
  local a = helper.free_port()
  for _ = 1, 20 do
    local b = helper.free_port()
    if b ~= a then return a, b end
  end
  error("no second free port")
end

local function start_kamailio(C)
  local udp, tls = two_ports()
  local dir = C.dir .. "/kamailio"
  os.execute("mkdir -p " .. helper.shell_quote(dir))
  write(dir .. "/tls.cfg", tls_cfg(C))
  write(dir .. "/kamailio.cfg", kamailio_cfg(dir .. "/tls.cfg"))
  local k = helper.kamailio{ cfg = dir .. "/kamailio.cfg", rundir = dir,
    listen = { "udp:127.0.0.1:" .. udp, "tls:127.0.0.1:" .. tls } }
  k.udp, k.tls = "sip:127.0.0.1:" .. udp, "sips:127.0.0.1:" .. tls
  k.udp_port, k.tls_port = udp, tls
  return k
end

local function offer(port)
  return (sip.sdp.offer{ addr = "127.0.0.1", port = port })
end

describe("Kamailio over TLS", function()
  local C, kam
  local uas = {}

  local function ua(opts)
    local u = assert(sip.ua(opts))
    uas[#uas + 1] = u
    return u
  end
  -- a Lua UA with a TLS listener (the server certificate) and UDP
  local function tls_ua(tls)
    local t = { cert = C.server.cert, key = C.server.key, cafile = C.ca }
    for k, v in pairs(tls or {}) do t[k] = v end
    return ua{ listen = { "tls:127.0.0.1:0", "udp:127.0.0.1:0" }, tls = t }
  end
  local function udp_ua()
    return ua{ listen = "udp:127.0.0.1:0" }
  end

  -- a UAS answering OPTIONS and INVITE; got[] collects what it saw
  local function serve(u, got)
    u:on("OPTIONS", function(req)
      got[#got + 1] = { method = "OPTIONS", transport = req.transport, tls = req.tls, raw = req:raw(),
                        uri = req.uri }
      return 200, "OK", { headers = { ["X-UAS"] = "lua" } }
    end)
    u:on("INVITE", function(call)
      local s = { method = "INVITE", transport = call.invite.transport, tls = call.invite.tls,
                  raw = call.invite:raw() }
      got[#got + 1] = s
      call:ring()
      s.answered = call:answer{ sdp = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1", port = 6002 }) }
      if call.invite:header("X-Hangup") == "callee" then
        sip.sleep(0.2)
        s.hangup = { call:hangup() }
      else
        s.why = call:wait(10)
      end
    end)
  end

  -- two calls from uac to target through proxy: the caller hangs up the
  -- first, the callee the second
  local function two_calls(uac, target, proxy)
    helper.run(function()
      local call, err, res = uac:invite(target, { sdp = offer(4010), timeout = 5, proxy = proxy })
      assert.is_nil(err, res and res.status)
      assert.are.equal("confirmed", call.state)
      assert.are.equal(6002, call.remote_sdp.media[1].port)
      sip.sleep(0.2)
      assert.is_true(call:hangup())
      call, err, res = uac:invite(target, { sdp = offer(4012), timeout = 5, proxy = proxy,
                                            headers = { ["X-Hangup"] = "callee" } })
      assert.is_nil(err, res and res.status)
      assert.are.equal("bye", call:wait(5))
      sip.sleep(0.2)
    end, 30)
  end

  setup(function()
    C = tlscerts.generate()
    kam = start_kamailio(C)
  end)
  teardown(function()
    if kam then kam.stop() end
    helper.stop_all()
    if C then C.remove() end
  end)
  after_each(function()
    for _, u in ipairs(uas) do u:close() end
    uas = {}
  end)

  it("answers OPTIONS from a Lua UA over TLS, its certificate verified", function()
    local cli = udp_ua()
    local res, err
    helper.run(function()
      -- the system store does not know the test CA: sips: fails
      res, err = cli:request("OPTIONS", kam.tls, { timeout = 5 })
    end, 10)
    assert.is_nil(res)
    -- Kamailio sends the test CA along in its chain
    assert.matches("^tls: certificate verify failed: ", err)
    cli = ua{ listen = "udp:127.0.0.1:0", tls = { cafile = C.ca } }
    helper.run(function()
      res, err = cli:request("OPTIONS", kam.tls, { timeout = 5 })
    end, 10)
    assert.is_nil(err, kam.proc.log())
    assert.are.equal(200, res.status)
    assert.are.equal("Kamailio Here", res.reason)
    assert.are.equal("tls", res.transport:lower())
  end)

  it("relays OPTIONS from a Lua UAC over TLS to a Lua UAS over UDP", function()
    local got = {}
    local b = udp_ua()
    serve(b, got)
    local a = tls_ua()
    local res, err
    helper.run(function()
      res, err = a:request("OPTIONS", b:uri("bob"), { timeout = 5, proxy = kam.tls })
    end, 10)
    assert.is_nil(err, kam.proc.log())
    assert.are.equal(200, res.status)
    assert.are.equal("lua", res:header("X-UAS"))
    assert.are.equal("tls", res.transport:lower())
    assert.are.equal(1, #got)
    assert.are.equal("udp", got[1].transport:lower())
    assert.is_nil(got[1].tls)
    -- Kamailio's Via over UDP on top of ours over TLS
    assert.matches("Via: SIP/2.0/UDP 127.0.0.1:" .. kam.udp_port, got[1].raw, 1, true)
    assert.matches("Via: SIP/2.0/TLS ", got[1].raw, 1, true)
  end)

  it("carries calls from a Lua UAC over TLS to a Lua UAS over UDP, hung up from both ends", function()
    local got = {}
    local b = udp_ua()
    serve(b, got)
    local a = tls_ua()
    two_calls(a, b:uri("bob"), kam.tls)
    assert.are.equal(2, #got, kam.proc.log())
    assert.are.equal("udp", got[1].transport:lower())
    assert.is_true(got[1].answered)
    assert.are.equal("bye", got[1].why)
    assert.are.same({ true }, got[2].hangup)
    -- Kamailio stayed in the path on both sides
    assert.matches("Record-Route: <sip:127.0.0.1:" .. kam.tls_port .. ";transport=tls", got[1].raw, 1, true)
  end)

  it("relays OPTIONS over TLS to a Lua UAS, whose verify_client sees Kamailio's certificate", function()
    local got = {}
    local b = tls_ua{ verify_client = true }
    serve(b, got)
    local a = udp_ua()
    local res, err
    helper.run(function()
      res, err = a:request("OPTIONS", b:uri("bob"), { timeout = 5, proxy = kam.udp })
    end, 10)
    assert.is_nil(err, kam.proc.log())
    assert.are.equal(200, res.status, kam.proc.log())
    assert.are.equal("lua", res:header("X-UAS"))
    assert.are.equal(1, #got)
    assert.are.equal("tls", got[1].transport:lower())
    assert.is_table(got[1].tls)
    assert.matches("CN=luasip client", got[1].tls.peer_subject, 1, true)
    assert.is_true(got[1].tls.verified)
    assert.matches("Via: SIP/2.0/TLS 127.0.0.1:" .. kam.tls_port, got[1].raw, 1, true)
  end)

  it("carries calls from a Lua UAC over UDP to a Lua UAS over TLS, hung up from both ends", function()
    local got = {}
    local b = tls_ua{ verify_client = true }
    serve(b, got)
    local a = udp_ua()
    two_calls(a, b:uri("bob"), kam.udp)
    assert.are.equal(2, #got, kam.proc.log())
    assert.are.equal("tls", got[1].transport:lower())
    assert.is_true(got[1].answered)
    assert.are.equal("bye", got[1].why)
    assert.are.same({ true }, got[2].hangup)
  end)

  it("cannot relay to a Lua TLS UAS whose CA it does not trust (408 at its fr_timer)", function()
    local got = {}
    local b = ua{ listen = "tls:127.0.0.1:0",
                  tls = { cert = C.other.cert, key = C.other.key, cafile = C.ca } }
    serve(b, got)
    local a = udp_ua()
    local res, err
    helper.run(function()
      res, err = a:request("OPTIONS", b:uri("bob"), { timeout = 10, proxy = kam.udp })
    end, 15)
    assert.is_nil(err)
    assert.is_true(res.status >= 400, res.status .. " " .. tostring(res.reason))
    assert.are.equal(0, #got)
  end)
end)
