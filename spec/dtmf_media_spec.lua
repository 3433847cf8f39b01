--- DTMF in the media engine (issue 15), at the session level: RFC 4733
-- events heard once per key press and sent as the RFC says, inband tones
-- detected by spandsp and sent by it, barge, malformed events and floods.
-- The peers: a second session, a UDP socket of our own sending crafted
-- packets or reading what a session sends, SIPp playing its RFC 4733
-- pcaps, tshark reading the wire, sox making the tones.
local sip = require "sip"
local core = require "sip.core"
local helper = require "helper"
local socket = require "socket"

local media = require "sip.media"

local DIR = helper.tmp .. "/dtmf"
os.execute("mkdir -p '" .. DIR .. "'")
local PORTS = "50000-59999"
local TE = 101
local PCAPS = "/usr/share/sip-tester"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

local function sox(args)
  local out, ok = sh("sox " .. args)
  assert(ok, "sox " .. args .. ": " .. out)
end

local function session()
  return assert(media.session{ addr = "127.0.0.1", ports = PORTS })
end

-- two sessions pointed at each other, with telephone-event when te
local function pair(te, codec)
  local a, b = session(), session()
  assert(a:set_remote{ addr = "127.0.0.1", port = b:local_port(), codec = codec or "PCMU",
                       telephone_event_pt = te })
  assert(b:set_remote{ addr = "127.0.0.1", port = a:local_port(), codec = codec or "PCMU",
                       telephone_event_pt = te })
  return a, b
end

-- what a session hears: got.digits "123", got.sources { "rfc4733", ... }
local function listen(s)
  local got = { digits = "", sources = {}, n = 0 }
  s:on_digit(function(digit, source)
    got.digits = got.digits .. digit
    got.sources[#got.sources + 1] = source
    got.n = got.n + 1
  end)
  return got
end

-- session:_send_dtmf and its wait, from a luasip coroutine
local function send_dtmf(s, digits, opts)
  local ok, err = s:_send_dtmf(digits, opts, sip._current("send_dtmf"))
  if not ok then return nil, err end
  return sip._wait()
end

local function all(list, v)
  for _, x in ipairs(list) do
    if x ~= v then return false end
  end
  return true
end

-- crafted RTP: a telephone-event payload, or any payload
local function rtp(seq, ts, ssrc, pt, payload, marker)
  return string.pack(">BBI2I4I4", 0x80, (marker and 0x80 or 0) | pt, seq & 0xffff,
                     ts & 0xffffffff, ssrc) .. payload
end
local function event(code, e, volume, duration)
  return string.pack(">BBI2", code, (e and 0x80 or 0) | (volume or 10), duration)
end

-- a socket of our own that b learns as its peer; send(list) sends
-- { ts =, code =, e =, dur =, m =, vol =, pt =, payload =, wait = } in order
local function crafted(b, ssrc)
  local u = assert(socket.udp())
  assert(u:setsockname("127.0.0.1", 0))
  local _, port = u:getsockname()
  port = tonumber(port)
  assert(b:set_remote{ addr = "127.0.0.1", port = port, codec = "PCMU", telephone_event_pt = TE })
  local seq = 100
  local peer = { u = u }
  function peer.send(list)
    for _, p in ipairs(list) do
      if p.wait then sip.sleep(p.wait) end
      seq = seq + 1
      u:sendto(rtp(seq, p.ts, p.ssrc or ssrc, p.pt or TE,
                   p.payload or event(p.code, p.e, p.vol, p.dur), p.m), "127.0.0.1", b:local_port())
      sip.sleep(0.005)
    end
  end
  return peer
end

-- tshark capturing UDP to `port` on lo into a file; nil when it cannot
local function capture(port)
  local path = DIR .. "/cap-" .. port .. ".pcap"
  os.remove(path)
  local proc = helper.spawn({ "tshark", "-i", "lo", "-f", "udp dst port " .. port, "-w", path },
                            "tshark")
  local deadline = core.now() + 10
  while core.now() < deadline do
    if proc.log():find("Capture started") or proc.log():find("Capturing on") then
      helper.spin(0.3)
      return { proc = proc, path = path }
    end
    if proc.done() then break end
    helper.spin(0.1)
  end
  proc.stop()
  return nil, proc.log()
end

-- the RTP events of a capture (or a pcap), as tshark decodes them
local function rtp_events(path, port)
  local out = sh("tshark -r '" .. path .. "' -d udp.port==" .. port .. ",rtp -Y rtpevent " ..
                 "-T fields -e rtp.p_type -e rtp.marker -e rtp.seq -e rtp.timestamp " ..
                 "-e rtpevent.event_id -e rtpevent.end_of_event -e rtpevent.volume " ..
                 "-e rtpevent.duration")
  local list = {}
  for line in out:gmatch("[^\n]+") do
    local f = {}
    for v in line:gmatch("[^\t]+") do f[#f + 1] = v end
    if #f == 8 and tonumber(f[1]) then
      list[#list + 1] = { pt = tonumber(f[1]), m = (f[2] == "1" or f[2] == "True"), seq = tonumber(f[3]),
                          ts = tonumber(f[4]), event = tonumber(f[5]),
                          e = (f[6] == "1" or f[6] == "True"), volume = tonumber(f[7]),
                          duration = tonumber(f[8]) }
    end
  end
  return list
end

local DIGIT_OF = { [0] = "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#", "A", "B", "C", "D" }

-- DTMF tones as sox makes them: each digit 0.1 s of its two frequencies
-- and 0.1 s of silence, after 0.2 s of silence
local FREQS = { ["1"] = { 697, 1209 }, ["5"] = { 770, 1336 }, ["9"] = { 852, 1477 },
                ["#"] = { 941, 1477 } }
local function dtmf_wav(digits)
  local path = DIR .. "/tones-" .. digits:gsub("#", "P") .. ".wav"
  local parts = { DIR .. "/silence.wav" }
  sox("-n -r 8000 -c 1 -b 16 " .. parts[1] .. " trim 0 0.2")
  for d in digits:gmatch(".") do
    local f = FREQS[d]
    local p = DIR .. "/tone-" .. d:gsub("#", "P") .. ".wav"
    sox("-n -r 8000 -c 1 -b 16 " .. p .. " synth 0.1 sine " .. f[1] .. " sine " .. f[2] .. " pad 0 0.1")
    parts[#parts + 1] = p
  end
  parts[#parts + 1] = parts[1]
  sox(table.concat(parts, " ") .. " " .. path)
  core.now()        -- the loop's clock again after sox
  return path
end

local function tone_wav(secs)
  local path = DIR .. "/tone-" .. secs .. "s.wav"
  sox("-n -r 8000 -c 1 -b 16 " .. path .. " synth " .. secs .. " sine 1000 vol 0.5")
  core.now()
  return path
end

describe("DTMF by RFC 4733", function()
  after_each(function() helper.stop_all() end)

  it("sends 1234# to a session that hears exactly 1234#: one event a digit, as tshark reads it", function()
    local a, b = pair(TE)
    finally(function() a:close(); b:close() end)
    local got = listen(b)
    assert.are.equal(TE, a:dtmf_pt())
    local cap, why = capture(b:local_port())
    local res = { helper.run(function() return send_dtmf(a, "1234#") end) }
    helper.spin(0.2)
    assert.are.same({ true }, res)
    assert.are.equal("1234#", got.digits)
    assert.is_true(all(got.sources, "rfc4733"))
    assert.are.equal(5, a:stats().dtmf_sent)
    assert.are.equal(5, b:stats().dtmf_received)
    assert.are.equal(0, b:stats().dtmf_invalid)
    assert.are.equal(35, b:stats().packets_received)
    if not cap then
      pending("tshark cannot capture on lo: " .. tostring(why))
      return
    end
    cap.proc.stop()
    local evs = rtp_events(cap.path, b:local_port())
    assert.are.equal(35, #evs, "packets tshark decoded as RTP events")
    -- grouped by timestamp: one group per digit
    local groups, order = {}, {}
    for i, p in ipairs(evs) do
      assert.are.equal(TE, p.pt)
      assert.are.equal(10, p.volume)
      if i > 1 then assert.are.equal((evs[i - 1].seq + 1) % 65536, p.seq) end
      if not groups[p.ts] then
        groups[p.ts] = {}
        order[#order + 1] = p.ts
      end
      table.insert(groups[p.ts], p)
    end
    assert.are.equal(5, #order)
    local digits = ""
    for k, ts in ipairs(order) do
      local g = groups[ts]
      digits = digits .. DIGIT_OF[g[1].event]
      local ends = 0
      for i, p in ipairs(g) do
        assert.are.equal(g[1].event, p.event)
        assert.are.equal(i == 1, p.m, "the marker on the first packet of an event only")
        if p.e then
          ends = ends + 1
          assert.are.equal(800, p.duration)
        else
          assert.are.equal(0, ends, "updates after an end packet")
          assert.are.equal(160 * i, p.duration)
        end
      end
      assert.are.equal(3, ends, "three end packets")
      assert.are.equal(7, #g)
      -- 100 ms of tone and the 50 ms gap, on the 20 ms grid: 160 ms apart
      if k > 1 then assert.are.equal(1280, (ts - order[k - 1]) % 2 ^ 32) end
    end
    assert.are.equal("1234#", digits)
  end)

  it("plays SIPp's RFC 4733 pcaps into a session: each file's digit, once", function()
    -- what is in the pcaps: one key press each, on payload type 101
    local files = { "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "star", "pound" }
    local expect = ""
    for _, f in ipairs(files) do
      local evs = rtp_events(PCAPS .. "/dtmf_2833_" .. f .. ".pcap", "0-65535")
      assert.is_true(#evs >= 4, f)
      local ends = 0
      for _, p in ipairs(evs) do
        assert.are.equal(TE, p.pt, "the payload type in dtmf_2833_" .. f .. ".pcap")
        assert.are.equal(evs[1].event, p.event)
        assert.are.equal(evs[1].ts, p.ts)
        if p.e then ends = ends + 1 end
      end
      assert.are.equal(3, ends)
      local d = DIGIT_OF[evs[1].event]
      assert.are.equal(f == "star" and "*" or f == "pound" and "#" or f, d)
      expect = expect .. d
    end
    assert.are.equal("0123456789*#", expect)
    local port = helper.free_port()
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:" .. port })
    local got = {}
    ua:on("INVITE", function(call)
      local s = session()
      got.heard = listen(s)
      local text, ours = media.sdp(s, call.invite.body, { codecs = { "PCMU", "telephone-event" } })
      got.answer = text
      assert(call:answer{ sdp = text })
      got.apply = { media.apply(s, call.invite.body, ours) }
      got.pt = s:dtmf_pt()
      got.config = { s:dtmf_config() }
      got.why = call:wait()
      got.stats = s:stats()
      s:close()
    end)
    local sipp = helper.sipp{ sf = "uac_dtmf_2833_pcaps.xml", port = helper.free_port(),
                              remote = "127.0.0.1:" .. port,
                              args = { "-m", 1, "-s", "ivr", "-mp", helper.free_port(),
                                       "-timeout", "30", "-timeout_error" } }
    finally(function() helper.stop_all(); ua:close() end)
    local rc = sipp:wait(30)
    assert.are.equal(0, rc, sipp.log())
    helper.spin(0.2)
    assert.matches("m=audio %d+ RTP/AVP 0 101\r\n", got.answer)
    assert.are.same({ true }, got.apply)
    assert.are.equal(TE, got.pt)
    assert.are.same({ true, false }, got.config)      -- events, no inband: the peer has events
    assert.are.equal("bye", got.why)
    assert.are.equal(expect, got.heard.digits)
    assert.is_true(all(got.heard.sources, "rfc4733"))
    assert.are.equal(12, got.stats.dtmf_received)
    assert.are.equal(0, got.stats.dtmf_invalid)
    assert.are.equal(0, got.stats.dtmf_dropped)
    assert.are.equal(0, core.media.count())
  end)

  it("counts a key press once: end retransmissions, a lost end or start, a long press, a reused timestamp", function()
    local b = session()
    finally(function() b:close() end)
    local got = listen(b)
    local peer = crafted(b, 7)
    finally(function() peer.u:close() end)
    helper.run(function()
      peer.send{
        -- "1": updates, three end packets
        { ts = 1000, code = 1, dur = 160, m = true }, { ts = 1000, code = 1, dur = 320 },
        { ts = 1000, code = 1, dur = 480 }, { ts = 1000, code = 1, dur = 800, e = true },
        { ts = 1000, code = 1, dur = 800, e = true }, { ts = 1000, code = 1, dur = 800, e = true },
        -- "2" loses its end: the next timestamp ends it
        { ts = 3000, code = 2, dur = 160, m = true }, { ts = 3000, code = 2, dur = 320 },
        { ts = 5000, code = 3, dur = 160, m = true },
        -- a late end packet of "1" is not a new press
        { ts = 1000, code = 1, dur = 800, e = true },
        { ts = 5000, code = 3, dur = 800, e = true },
        -- "D" at full volume whose start was lost: its first packet ends it
        { ts = 7000, code = 15, dur = 0, vol = 0, e = true }, { ts = 7000, code = 15, dur = 0, vol = 0, e = true },
        -- "0" held longer than the duration field: a second segment
        { ts = 9000, code = 0, dur = 65000, vol = 63, m = true }, { ts = 9000, code = 0, dur = 65535, vol = 63 },
        { ts = 9000 + 65535, code = 0, dur = 160, vol = 63 },
        { ts = 9000 + 65535, code = 0, dur = 4000, vol = 63, e = true },
        -- "4", then its timestamp again after a pause: a second press
        { ts = 200000, code = 4, dur = 160, m = true }, { ts = 200000, code = 4, dur = 800, e = true },
        { ts = 200000, code = 4, dur = 160, m = true, wait = 0.4 }, { ts = 200000, code = 4, dur = 800, e = true },
      }
      sip.sleep(0.1)
    end)
    assert.are.equal("123D044", got.digits)
    local st = b:stats()
    assert.are.equal(7, st.dtmf_received)
    assert.are.equal(0, st.dtmf_invalid)
  end)

  it("hears events on its own offer's payload type too (set_local_te_pt)", function()
    local b = session()
    finally(function() b:close() end)
    local got = listen(b)
    local peer = crafted(b, 8)
    finally(function() peer.u:close() end)
    helper.run(function()
      peer.send{ { ts = 10, code = 9, dur = 160, m = true, pt = 96 } }        -- not known yet
      b:set_local_te_pt(96)
      peer.send{ { ts = 20, code = 9, dur = 160, m = true, pt = 96 },
                 { ts = 30, code = 11, dur = 160, m = true, pt = TE } }
      sip.sleep(0.1)
    end)
    assert.are.equal("9#", got.digits)
    assert.are.equal(1, b:stats().unknown_pt)
    assert.has_error(function() b:set_local_te_pt(0) end)
    assert.has_error(function() b:set_local_te_pt(128) end)
    b:set_local_te_pt(nil)
  end)

  it("drops and counts malformed events: short, event above 15, duration backwards, event changed", function()
    local b = session()
    finally(function() b:close() end)
    local got = listen(b)
    local peer = crafted(b, 9)
    finally(function() peer.u:close() end)
    helper.run(function()
      peer.send{
        { ts = 100, payload = "\5\10\0" },                               -- short
        { ts = 200, code = 16, dur = 160, m = true },                    -- flash: not a digit
        { ts = 300, code = 200, dur = 160, m = true },
        { ts = 400, code = 5, dur = 640, m = true },                     -- "5"
        { ts = 400, code = 5, dur = 320 },                               -- backwards
        { ts = 400, code = 6, dur = 800 },                               -- another code, same event
        { ts = 400, code = 5, dur = 800, e = true },
        { ts = 500, payload = "" },
      }
      sip.sleep(0.1)
    end)
    assert.are.equal("5", got.digits)
    local st = b:stats()
    assert.are.equal(6, st.dtmf_invalid)
    assert.are.equal(1, st.dtmf_received)
  end)

  it("caps a flood: digits waiting for on_digit stop at max_queued, the rest counted as dropped", function()
    local b = session()
    finally(function() b:close() end)
    local delivered = 0
    b:on_digit(function() delivered = delivered + 1 end)
    local peer = crafted(b, 10)
    finally(function() peer.u:close() end)
    assert.are.same({ true, false }, { b:dtmf_config{ max_queued = 8 } })
    local port, n = b:local_port(), 0
    collectgarbage()
    local mem = collectgarbage("count")
    local t0 = core.now()
    helper.run(function()
      -- 3000 key presses in about a second, a new timestamp each
      for burst = 1, 60 do
        for i = 1, 50 do
          n = n + 1
          peer.u:sendto(rtp(n, n * 1000, 10, TE, event((burst + i) % 16, false, 10, 160), true),
                        "127.0.0.1", port)
        end
        sip.sleep(0.015)
      end
      -- and a thousand malformed ones
      for i = 1, 1000 do
        n = n + 1
        peer.u:sendto(rtp(n, n * 1000, 10, TE, event(16 + i % 200, false, 10, 160), true), "127.0.0.1", port)
        if i % 100 == 0 then sip.sleep(0.01) end
      end
      sip.sleep(0.2)
    end)
    local took = core.now() - t0
    local st = b:stats()
    assert.is_true(took < 5, "took " .. took)
    -- whatever the kernel let through was heard, and either delivered or dropped
    assert.is_true(st.dtmf_received > 2500, "received " .. st.dtmf_received)
    assert.are.equal(st.dtmf_received, delivered + st.dtmf_dropped)
    assert.is_true(st.dtmf_dropped > 0, "nothing dropped")
    assert.is_true(delivered >= 8 * 60, "delivered " .. delivered)
    assert.is_true(st.dtmf_invalid > 900, "invalid " .. st.dtmf_invalid)
    collectgarbage()
    assert.is_true(collectgarbage("count") - mem < 256, "Lua memory grew by " ..
                   (collectgarbage("count") - mem) .. " KiB")
    -- the default (64) takes what one loop turn reads: none dropped
    local b2 = session()
    finally(function() b2:close() end)
    local d2 = 0
    b2:on_digit(function() d2 = d2 + 1 end)
    local peer2 = crafted(b2, 11)
    finally(function() peer2.u:close() end)
    helper.run(function()
      for i = 1, 500 do
        peer2.u:sendto(rtp(i, i * 1000, 11, TE, event(i % 16, true, 10, 160), true), "127.0.0.1",
                       b2:local_port())
        if i % 50 == 0 then sip.sleep(0.02) end
      end
      sip.sleep(0.2)
    end)
    local st2 = b2:stats()
    assert.is_true(st2.dtmf_received > 450, "received " .. st2.dtmf_received)
    assert.are.equal(0, st2.dtmf_dropped)
    assert.are.equal(st2.dtmf_received, d2)
  end)

  it("holds the audio back while events go out; the prompt resumes after them as a new talkspurt", function()
    local a = session()
    finally(function() a:close() end)
    local sink = assert(socket.udp())
    assert(sink:setsockname("127.0.0.1", 0))
    sink:settimeout(0)
    finally(function() sink:close() end)
    local _, port = sink:getsockname()
    port = tonumber(port)
    assert(a:set_remote{ addr = "127.0.0.1", port = port, codec = "PCMU", telephone_event_pt = TE })
    local file = tone_wav(1)
    local pkts, got = {}, {}
    helper.run(function()
      local done = false
      sip.spawn(function()
        while not done do
          while true do
            local d = sink:receive()
            if not d then break end
            local _, b1, seq, ts = string.unpack(">BBI2I4", d)
            pkts[#pkts + 1] = { pt = b1 & 127, m = b1 >> 7 == 1, seq = seq, ts = ts, len = #d - 12 }
          end
          sip.sleep(0.01)
        end
      end)
      sip.spawn(function()
        sip.sleep(0.3)
        got.sent = { send_dtmf(a, "12") }
      end)
      got.play = { media.play(a, file) }
      sip.sleep(0.1)
      done = true
      sip.sleep(0.02)
    end)
    assert.are.same({ true }, got.sent)
    assert.are.same({ true }, got.play)
    local audio, first_ev, last_ev = 0, nil, nil
    for i, p in ipairs(pkts) do
      if i > 1 then assert.are.equal((pkts[i - 1].seq + 1) % 65536, p.seq) end
      if p.pt == TE then
        first_ev = first_ev or i
        last_ev = i
      else
        assert.are.equal(0, p.pt)
        audio = audio + 1
      end
    end
    -- the whole second of the prompt went out, none of it during the events
    assert.are.equal(50, audio)
    assert.are.equal(14, last_ev - first_ev + 1)
    assert.is_true(first_ev > 1)
    local before, ev, after = pkts[first_ev - 1], pkts[first_ev], pkts[last_ev + 1]
    -- the events start where the next audio frame would have
    assert.are.equal((before.ts + 160) % 2 ^ 32, ev.ts)
    -- two digits of 160 ms: the clock ran on under them
    assert.are.equal((ev.ts + 2 * 1280) % 2 ^ 32, after.ts)
    assert.is_true(after.m)
    assert.are.equal(2, a:stats().dtmf_sent)
  end)

  it("stop and close end a send with their reason; a new send replaces the one running", function()
    local a, b = pair(TE)
    finally(function() a:close(); b:close() end)
    local got = listen(b)
    local r = {}
    helper.run(function()
      sip.spawn(function()
        sip.sleep(0.25)
        r.play_only = a:stop("x", "play")       -- a play or tone only: none runs
        r.n = a:stop("cancelled", "output")
      end)
      r.first = { send_dtmf(a, "123456789") }
      r.busy = { a:busy() }
      sip.sleep(0.2)
      sip.spawn(function() r.replaced = { send_dtmf(a, "999") } end)
      sip.sleep(0.05)
      r.second = { send_dtmf(a, "#") }
      sip.spawn(function() sip.sleep(0.1); a:close("hangup") end)
      r.third = { send_dtmf(a, "0000") }
      sip.sleep(0.1)
    end)
    assert.are.same({ nil, "cancelled" }, r.first)
    assert.are.equal(0, r.play_only)
    assert.are.equal(1, r.n)
    assert.are.same({ false, false, false }, r.busy)
    assert.are.same({ nil, "stopped" }, r.replaced)
    assert.are.same({ true }, r.second)
    assert.are.same({ nil, "hangup" }, r.third)
    -- "1" went whole, "2" was cut in its event (which still ended); the
    -- replaced send's first "9"; the "#"; the first "0"
    assert.are.equal("129#0", got.digits)
    assert.is_nil(a:dtmf_pt())
  end)

  it("stop(reason, \"dtmf\") ends a send and leaves the play it held back, which goes on", function()
    local a, b = pair(TE)
    finally(function() a:close(); b:close() end)
    local got = listen(b)
    local file = tone_wav(1)
    local r = {}
    helper.run(function()
      sip.spawn(function()
        sip.sleep(0.2)
        sip.spawn(function() sip.sleep(0.05); r.busy = { a:busy() }; r.n = a:stop("enough", "dtmf") end)
        r.sent = { send_dtmf(a, "4444") }
      end)
      r.play = { media.play(a, file) }
    end)
    assert.are.same({ true, false, true }, r.busy)
    assert.are.equal(1, r.n)
    assert.are.same({ nil, "enough" }, r.sent)
    assert.are.same({ true }, r.play)
    assert.are.equal("4", got.digits)
    -- the whole prompt, and the one event: its updates so far, then its
    -- three end packets at the stop
    local events = a:stats().packets_sent - 50
    assert.is_true(events >= 4 and events <= 7, events .. " event packets")
    assert.are.equal(a:stats().packets_sent, b:stats().packets_received)
  end)

  it("raises for a bad digit or option, naming call:send_dtmf; fails without telephone-event", function()
    local a, b = pair(nil)
    finally(function() a:close(); b:close() end)
    helper.run(function()
      local co = sip._current("x")
      local function err_of(...)
        local ok, e = pcall(a._send_dtmf, a, ...)
        assert.is_false(ok)
        return e
      end
      assert.matches("call:send_dtmf: 'x' is not a DTMF digit %(0%-9, %*, #, A%-D%)", err_of("12x", {}, co))
      assert.matches("call:send_dtmf: 'a' is not a DTMF digit", err_of("a", {}, co))
      assert.matches("call:send_dtmf: byte 10 is not a DTMF digit", err_of("1\n", {}, co))
      assert.matches("call:send_dtmf: no digits", err_of("", {}, co))
      assert.matches("call:send_dtmf: at most 128 digits", err_of(("1"):rep(129), {}, co))
      assert.matches("call:send_dtmf: digits must be a string", err_of(12, {}, co))
      assert.matches("call:send_dtmf: unknown option 'mdoe'", err_of("1", { mdoe = "inband" }, co))
      assert.matches("call:send_dtmf: opts.mode must be", err_of("1", { mode = "info" }, co))
      assert.matches("call:send_dtmf: opts.duration must be 20..8000 ms", err_of("1", { duration = 5 }, co))
      assert.matches("call:send_dtmf: opts.gap must be", err_of("1", { gap = -1 }, co))
      assert.matches("call:send_dtmf: opts.volume must be 0..63", err_of("1", { volume = 64 }, co))
      assert.matches("call:send_dtmf: a coroutine to wake is required", err_of("1", {}))
      assert.are.same({ nil, "dtmf: no telephone-event negotiated" }, { a:_send_dtmf("1", {}, co) })
      assert.are.same({ nil, "dtmf: no telephone-event negotiated" },
                      { a:_send_dtmf("1", { mode = "rfc4733" }, co) })
    end)
    assert.is_nil(a:dtmf_pt())
    assert.are.same({ nil, "telephone_event_pt: 0 is an audio payload type" },
                    { a:set_remote{ addr = "127.0.0.1", port = 4000, codec = "PCMU", telephone_event_pt = 0 } })
  end)
end)

describe("DTMF inband", function()
  after_each(function() helper.stop_all() end)

  it("is on iff the peer negotiated no telephone-event, unless dtmf_config says otherwise", function()
    local s = session()
    finally(function() s:close() end)
    assert.are.same({ true, true }, { s:dtmf_config() })
    assert(s:set_remote{ addr = "127.0.0.1", port = 4000, codec = "PCMU", telephone_event_pt = TE })
    assert.are.same({ true, false }, { s:dtmf_config() })
    assert.are.same({ true, true }, { s:dtmf_config{ inband = true } })
    assert(s:set_remote{ addr = "127.0.0.1", port = 4000, codec = "PCMU" })
    assert.are.same({ false, true }, { s:dtmf_config{ rfc4733 = false } })
    assert.are.same({ false, false }, { s:dtmf_config{ inband = false } })
    assert(s:set_remote{ addr = "127.0.0.1", port = 4000, codec = "PCMU", telephone_event_pt = TE })
    assert.are.same({ false, false }, { s:dtmf_config() })    -- explicit values stay
    assert.has_error(function() s:dtmf_config{ inbnd = true } end, "dtmf_config: unknown option 'inbnd'")
    assert.has_error(function() s:dtmf_config{ inband = 1 } end, "dtmf_config: opts.inband must be a boolean")
    assert.has_error(function() s:dtmf_config{ max_queued = 65 } end)
    s:close()
    assert.has_error(function() s:dtmf_config() end, "dtmf_config: the media session is closed")
  end)

  it("sends tones inband both ways, and each side hears the other's digits", function()
    for _, codec in ipairs{ "PCMU", "PCMA" } do
      local a, b = pair(nil, codec)
      local ga, gb = listen(a), listen(b)
      local r = {}
      helper.run(function()
        sip.spawn(function() r.b = { send_dtmf(b, "2468", { mode = "inband" }) } end)
        r.a = { send_dtmf(a, "159#ABCD*0", { mode = "inband", duration = 80, gap = 60, volume = 6 }) }
        while not r.b do sip.sleep(0.05) end
        sip.sleep(0.1)
      end)
      assert.are.same({ true }, r.a)
      assert.are.same({ true }, r.b)
      assert.are.equal("159#ABCD*0", gb.digits, codec)
      assert.are.equal("2468", ga.digits, codec)
      assert.is_true(all(gb.sources, "inband"))
      assert.are.equal(10, a:stats().dtmf_sent)
      assert.are.equal(10, b:stats().dtmf_received)
      -- 10 digits of 80 + 60 ms
      assert.is_true(math.abs(a:stats().packets_sent - 70) <= 1, "sent " .. a:stats().packets_sent)
      a:close()
      b:close()
    end
  end)

  it("hears 159# in a WAV of tones made with sox, played by the other session", function()
    local file = dtmf_wav("159#")
    for _, codec in ipairs{ "PCMU", "PCMA" } do
      local a, b = pair(nil, codec)
      finally(function() a:close(); b:close() end)
      local got = listen(b)
      local res = { helper.run(function() return media.play(a, file) end) }
      helper.spin(0.1)
      assert.are.same({ true }, res)
      assert.are.equal("159#", got.digits, codec)
      assert.is_true(all(got.sources, "inband"))
    end
    -- with inband off, nothing is heard
    local a, b = pair(nil)
    finally(function() a:close(); b:close() end)
    local got = listen(b)
    b:dtmf_config{ inband = false }
    helper.run(function() return media.play(a, file) end)
    assert.are.equal("", got.digits)
    assert.are.equal(0, b:stats().dtmf_received)
  end)

  it("hears a key a peer sends both ways at once (events and tones) once", function()
    local b = session()
    finally(function() b:close() end)
    local peer = crafted(b, 12)
    finally(function() peer.u:close() end)
    assert.are.same({ true, true }, { b:dtmf_config{ inband = true } })
    local got = listen(b)
    -- the tones as G.711 u-law, 160 bytes a frame: a key every 0.2 s from 0.2 s
    local raw = DIR .. "/tones-159P.ul"
    sox(dtmf_wav("159#") .. " -t raw -e u-law -r 8000 -c 1 " .. raw)
    local f = assert(io.open(raw, "rb"))
    local ulaw = f:read("a")
    f:close()
    local codes = { 1, 5, 9, 11 }
    helper.run(function()
      local seq = 1
      local function send(pt, ts, payload, m)
        seq = seq + 1
        peer.u:sendto(rtp(seq, ts, 12, pt, payload, m), "127.0.0.1", b:local_port())
      end
      for i = 0, #ulaw // 160 - 1 do
        local key = (i >= 10 and (i - 10) % 10 < 5) and codes[(i - 10) // 10 + 1]
        if key then
          -- the event of the key with its tone: started with the tone's first frame
          local start, k = (i - (i - 10) % 10) * 160, (i - 10) % 10
          send(TE, start, event(key, k == 4, 10, (k + 1) * 160), k == 0)
        end
        send(0, i * 160, ulaw:sub(i * 160 + 1, i * 160 + 160), i == 0)
        sip.sleep(0.02)
      end
      sip.sleep(0.1)
    end)
    assert.are.equal("159#", got.digits)
    assert.is_true(all(got.sources, "rfc4733"))
    assert.are.equal(4, b:stats().dtmf_received)
  end)
end)

describe("DTMF barge", function()
  after_each(function() helper.stop_all() end)

  it("a digit heard stops a play started with barge at once: nil, \"digit\", \"5\"", function()
    local file = tone_wav(3)
    for _, mode in ipairs{ "rfc4733", "inband" } do
      local a, b = pair(mode == "rfc4733" and TE or nil)
      finally(function() a:close(); b:close() end)
      local log = {}
      b:on_digit(function(d, src) log[#log + 1] = { "digit", d, src, core.now() } end)
      local r = {}
      helper.run(function()
        sip.spawn(function() sip.sleep(0.5); r.sent = { send_dtmf(a, "5", { mode = mode }) } end)
        r.play = { media.play(b, file, { barge = true }) }
        log[#log + 1] = { "play", core.now() }
        r.sent_before = b:stats().packets_sent
        sip.sleep(0.2)
      end)
      assert.are.same({ nil, "digit", "5" }, r.play, mode)
      assert.are.same({ true }, r.sent)
      -- the digit first, then the play's end, in the same turn of the loop
      assert.are.equal("digit", log[1][1])
      assert.are.equal("5", log[1][2])
      assert.are.equal(mode, log[1][3])
      assert.are.equal("play", log[2][1])
      assert.is_true(log[2][2] - log[1][4] < 0.02, "play woke " .. (log[2][2] - log[1][4]) .. " s after")
      -- nothing more of the prompt went out
      assert.are.equal(r.sent_before, b:stats().packets_sent)
      assert.is_true(r.sent_before < 50, "sent " .. r.sent_before)
    end
  end)

  it("leaves a play without barge alone, and barge(digit) from Lua still stops one", function()
    local file = tone_wav(1)
    local a, b = pair(TE)
    finally(function() a:close(); b:close() end)
    local got = listen(b)
    local r = {}
    helper.run(function()
      sip.spawn(function() sip.sleep(0.3); r.sent = { send_dtmf(a, "7") } end)
      r.play = { media.play(b, file) }
      sip.spawn(function() sip.sleep(0.2); r.barged = b:barge("3") end)
      r.play2 = { media.play(b, file, { barge = true }) }
    end)
    assert.are.same({ true }, r.play)
    assert.are.equal("7", got.digits)
    assert.is_true(r.barged)
    assert.are.same({ nil, "digit", "3" }, r.play2)
    assert.is_false(b:barge("4"))
  end)
end)

describe("DTMF delivery", function()
  it("keeps on_digit's function in the session, which it does not keep alive", function()
    local before = core.media.count()
    local fn = function() end
    do
      local s = session()
      s:on_digit(fn)
      for _, v in pairs(debug.getregistry()) do
        assert.are_not.equal(fn, v, "the function is in the registry")
      end
    end
    collectgarbage()
    collectgarbage()
    assert.are.equal(before, core.media.count())
    -- on_digit(nil) stops the delivery; a closed session's digits stop
    local a, b = pair(TE)
    finally(function() a:close(); b:close() end)
    local got = listen(b)
    b:on_digit(nil)
    helper.run(function() send_dtmf(a, "1") end)
    helper.spin(0.1)
    assert.are.equal("", got.digits)
    assert.are.equal(1, b:stats().dtmf_received)
    assert.are.equal(0, b:stats().dtmf_dropped)
    assert.has_error(function() b:on_digit(42) end)
  end)
end)
