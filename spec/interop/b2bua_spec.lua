--- examples/b2bua.lua between real peers: two baresip phones (Debian's
-- package) talking through it with media relayed, each of which must hear
-- the other's tone (aufile speaks, sndfile writes what is heard); and
-- Kamailio in front of it as a record-routing proxy for the caller's leg
-- (spec/kamailio/b2bua_proxy.cfg), SIPp at both ends: the call completes,
-- and a BYE from either side ends it through the proxy.
local helper = require "helper"
local core = require "sip.core"

local root, sh, stat = helper.root, helper.sh, helper.sound

-- until proc's log has `text` (plain), or `timeout` seconds
local function logged(proc, text, timeout)
  local deadline = core.now() + (timeout or 30)
  while not proc.log():find(text, 1, true) do
    if core.now() > deadline or proc.done() then return proc.log():find(text, 1, true) ~= nil end
    helper.spin(0.1)
  end
  return true
end

-- n free ports, all different (a port just probed free may be handed
-- out again before its user binds it)
local function free_ports(n)
  local list, seen = {}, {}
  while #list < n do
    local p = helper.free_port()
    if not seen[p] then
      seen[p] = true
      list[#list + 1] = p
    end
  end
  return table.unpack(list)
end

-- the example on `port` (default a free one), with more arguments, once
-- it listens
local function start_b2bua(args, port)
  port = port or helper.free_port()
  local argv = { root .. "/bin/luasip", root .. "/examples/b2bua.lua", "udp:127.0.0.1:" .. port }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local proc = helper.spawn(argv, "b2bua")
  assert(logged(proc, "listening on", 30), proc.log())
  return proc, port
end

describe("examples/b2bua.lua between two baresip phones", function()
  after_each(helper.stop_all)

  -- baresip's configuration in cfg: a phone on `port` with the account
  -- line given, whose voice is the WAV `voice`, dumping what it hears
  -- into `dump` (sndfile), RTP on `rtp_ports`
  local function write_config(cfg, port, account, voice, dump, rtp_ports)
    local f = assert(io.open(cfg .. "/config", "w"))
    f:write(table.concat({
      "poll_method epoll",
      "sip_listen 127.0.0.1:" .. port,
      "sip_transports udp",
      "audio_player aubridge,nowhere",
      "audio_source aufile," .. voice,
      "audio_alert aubridge,nowhere",
      "module_path /usr/lib/baresip/modules",
      "module stdio.so", "module g711.so", "module aufile.so", "module aubridge.so",
      "module sndfile.so", "module_app account.so", "module_app menu.so",
      "snd_path " .. dump,
      "rtp_ports " .. rtp_ports,
    }, "\n") .. "\n")
    f:close()
    f = assert(io.open(cfg .. "/accounts", "w"))
    f:write(account, "\n")
    f:close()
    assert(io.open(cfg .. "/contacts", "w")):close()
  end

  -- baresip shuts down on SIGTERM (the sndfile dumps are closed by then)
  local function quit(phone)
    local pid = sh("pgrep -s " .. phone.pid .. " -x baresip"):match("%d+")
    if pid then os.execute("kill -TERM " .. pid) end
    return phone:wait(30)
  end

  it("relays media both ways, PCMU to PCMA: each phone hears the other's tone", function()
    local dir = helper.tmp .. "/b2bua-baresip-" .. math.random(1, 1e9)
    finally(function() os.execute("rm -rf '" .. dir .. "'") end)
    -- alice speaks 700 Hz for 5 s in PCMU, then hangs up (aufile at its
    -- end); bob answers at once and speaks 1 kHz in PCMA for longer
    local phones = {
      alice = { tone = 700, secs = 5, rtp = "51000-51499", params = ";audio_codecs=PCMU" },
      bob = { tone = 1000, secs = 30, rtp = "51500-51999", params = ";audio_codecs=PCMA;answermode=auto" },
    }
    local b2bua_port
    b2bua_port, phones.alice.port, phones.bob.port = free_ports(3)
    for name, p in pairs(phones) do
      p.cfg, p.dump, p.voice = dir .. "/" .. name, dir .. "/" .. name .. "/dump", dir .. "/" .. name .. ".wav"
      assert(os.execute("mkdir -p '" .. p.dump .. "'"))
      sh(string.format("sox -n -r 8000 -c 1 -b 16 '%s' synth %d sine %d vol 0.5", p.voice, p.secs, p.tone))
      write_config(p.cfg, p.port, "<sip:" .. name .. "@127.0.0.1>;regint=0" .. p.params,
                   p.voice, p.dump, p.rtp)
    end
    local alice, bob = phones.alice, phones.bob
    local b2bua, port = start_b2bua({ "-m", "relay", "-n", "1", "-t", "bob=sip:bob@127.0.0.1:" .. bob.port },
                                    b2bua_port)
    bob.proc = helper.spawn({ "baresip", "-f", bob.cfg, "-t", "90" }, "baresip-bob")
    assert(logged(bob.proc, "baresip is ready", 30), bob.proc.log())
    alice.proc = helper.spawn({ "baresip", "-f", alice.cfg, "-t", "90",
                                "-e", "/dial sip:bob@127.0.0.1:" .. port }, "baresip-alice")
    -- the call ends when alice has said it all
    assert.are.equal(0, b2bua:wait(60), b2bua.log() .. "\n" .. alice.proc.log() .. "\n" .. bob.proc.log())
    assert.matches("b2bua: call 1 from sip:alice@127.0.0.1 to bob: ended by the caller (bye)",
                   b2bua.log(), nil, true)
    for _, p in pairs(phones) do quit(p.proc) end
    -- relayed, not direct: each phone's RTP came from the example's
    -- ports, not from the other phone's range (baresip logs the source),
    -- in the phone's own codec
    for name, p in pairs(phones) do
      assert.matches("audio: Set audio decoder: " .. p.params:match("audio_codecs=(%u+)"), p.proc.log())
      local from = tonumber(p.proc.log():match("incoming rtp for 'audio' established, receiving from [%d.]+:(%d+)"))
      assert.truthy(from, name .. " received no RTP\n" .. p.proc.log())
      assert.is_true(from < 51000 or from > 51999, name .. " got RTP from port " .. from .. ", a phone's")
    end
    -- each heard the other: alice bob's 1 kHz, bob alice's 700 Hz
    for name, p in pairs(phones) do
      local other = name == "alice" and bob or alice
      local heard = sh("ls '" .. p.dump .. "'/*-dec.wav"):match("%S+")
      assert.truthy(heard, name .. " heard nothing\n" .. p.proc.log())
      local len, rms, freq = stat(heard)
      assert.is_true(len > 2, name .. " heard " .. tostring(len) .. " s")
      assert.is_true(rms > 0.05, name .. " heard rms " .. tostring(rms))
      assert.is_true(math.abs(freq - other.tone) < 80,
                     name .. " heard " .. tostring(freq) .. " Hz, not " .. other.tone)
    end
  end)
end)

describe("examples/b2bua.lua behind Kamailio", function()
  after_each(helper.stop_all)

  -- Kamailio sending calls for its domain to the example, which sends
  -- `service` to a SIPp uas on uas_port
  local function chain(uas_port)
    local b2bua, port = start_b2bua{ "-m", "direct", "-n", "1",
                                     "-t", "service=sip:service@127.0.0.1:" .. uas_port }
    local k = helper.kamailio{ cfg = "b2bua_proxy.cfg", args = { "-A", 'B2BUA="sip:127.0.0.1:' .. port .. '"' } }
    return b2bua, k
  end

  it("carries a call from SIPp through the proxy to a SIPp uas; the caller's BYE ends it", function()
    local uas_port = helper.free_port()
    local uas = helper.sipp{ sn = "uas", port = uas_port, args = { "-m", 1 } }
    local b2bua, k = chain(uas_port)
    local uac = helper.sipp{ sf = "uac_via_proxy.xml", port = helper.free_port(), remote = "127.0.0.1:" .. k.port,
                             args = { "-m", 1, "-s", "service", "-d", 1000, "-timeout", "60", "-timeout_error" } }
    assert.are.equal(0, uac:wait(60), uac.log() .. "\n" .. b2bua.log())
    assert.are.equal(0, uas:wait(30), uas.log())
    assert.are.equal(0, b2bua:wait(30), b2bua.log())
    assert.matches("b2bua: call 1 from sip:sipp@127.0.0.1:%d+ to service: ended by the caller %(bye%)",
                   b2bua.log())
  end)

  it("sends the callee's BYE back through the proxy to the caller", function()
    local uas_port = helper.free_port()
    local uas = helper.sipp{ sf = "uas_answer_then_bye.xml", port = uas_port, args = { "-m", 1 } }
    local b2bua, k = chain(uas_port)
    local uac = helper.sipp{ sf = "uac_via_proxy_callee_bye.xml", port = helper.free_port(),
                             remote = "127.0.0.1:" .. k.port,
                             args = { "-m", 1, "-s", "service", "-timeout", "60", "-timeout_error" } }
    assert.are.equal(0, uac:wait(60), uac.log() .. "\n" .. b2bua.log())
    assert.are.equal(0, uas:wait(30), uas.log())
    assert.are.equal(0, b2bua:wait(30), b2bua.log())
    assert.matches("b2bua: call 1 from sip:sipp@127.0.0.1:%d+ to service: ended by the callee %(bye%)",
                   b2bua.log())
  end)
end)
