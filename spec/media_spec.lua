--- Media (issue 14): RTP sessions (sip.MediaSession, csrc/media/) and the
-- verbs of lua/sip/media.lua, against real peers: a second session, a
-- packet sink in its own process, SIPp playing g711a.pcap into a luasip
-- UA that records it, and SIPp echoing what a session plays. Sound files
-- are made with sox into spec/tmp/media at test time and checked with sox.
local sip = require "sip"
local core = require "sip.core"
local helper = require "helper"

local media = require "sip.media"

local DIR = helper.tmp .. "/media"
os.execute("mkdir -p '" .. DIR .. "'")
local PORTS = "30000-39999"

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

-- the test sounds: a 1 kHz tone in the formats a prompt comes in
local F = {}
local function make_files()
  if F.done then return end
  F.tone3 = DIR .. "/tone1k-3s.wav"
  sox("-n -r 8000 -c 1 -b 16 " .. F.tone3 .. " synth 3 sine 1000 vol 0.5")
  F.tone1 = DIR .. "/tone1k-1s.wav"
  sox("-n -r 8000 -c 1 -b 16 " .. F.tone1 .. " synth 1 sine 1000 vol 0.5")
  F.st48 = DIR .. "/tone-48k-stereo.wav"
  sox("-n -r 48000 -c 2 -b 16 " .. F.st48 .. " synth 1 sine 1000 vol 0.5")
  F.m16 = DIR .. "/tone-16k.wav"
  sox("-n -r 16000 -c 1 -b 16 " .. F.m16 .. " synth 1 sine 1000 vol 0.5")
  F.m44 = DIR .. "/tone-44k1.wav"
  sox("-n -r 44100 -c 1 -b 16 " .. F.m44 .. " synth 1 sine 1000 vol 0.5")
  F.ulaw = DIR .. "/tone-ulaw.wav"
  sox("-n -r 8000 -c 1 -e u-law " .. F.ulaw .. " synth 1 sine 1000 vol 0.5")
  F.alaw = DIR .. "/tone-alaw.wav"
  sox("-n -r 8000 -c 1 -e a-law " .. F.alaw .. " synth 1 sine 1000 vol 0.5")
  F.tone_then_silence = DIR .. "/tone-then-silence.wav"
  sox("-n -r 8000 -c 1 -b 16 " .. F.tone_then_silence .. " synth 1 sine 1000 vol 0.5 pad 0 4")
  F.gsm = DIR .. "/gsm.wav"
  sox("-n -r 8000 -c 1 -e gsm-full-rate " .. F.gsm .. " synth 1 sine 1000")
  F.three = DIR .. "/three-channels.wav"
  sox("-n -r 8000 -c 3 -b 16 " .. F.three .. " synth 1 sine 1000")
  F.text = DIR .. "/not-audio.wav"
  local f = assert(io.open(F.text, "w"))
  f:write("this is not a sound file\n")
  f:close()
  F.truncated = DIR .. "/truncated.wav"
  local src = assert(io.open(F.tone1, "rb"))
  local head = src:read(30)
  src:close()
  f = assert(io.open(F.truncated, "wb"))
  f:write(head)
  f:close()
  F.done = true
end

-- duration (s) and RMS amplitude (0..1) and rough frequency of a WAV, by sox
local function sound(path)
  local d = tonumber((sh("sox --i -D '" .. path .. "'")))
  local stat = sh("sox '" .. path .. "' -n stat")
  local rms = tonumber(stat:match("RMS%s+amplitude:%s+([%d%.]+)"))
  local freq = tonumber(stat:match("Rough%s+frequency:%s+(%d+)"))
  return d, rms, freq
end

-- the samples of a 16-bit PCM WAV (its "data" chunk)
local function wav_samples(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  local pos = 13
  while pos < #s do
    local id, size = string.unpack("<c4I4", s, pos)
    if id == "data" then
      local out = {}
      local n = math.min(size, #s - pos - 7) // 2
      for i = 1, n do out[i] = string.unpack("<i2", s, pos + 8 + (i - 1) * 2) end
      return out
    end
    pos = pos + 8 + size + (size % 2)
  end
  error("no data chunk in " .. path)
end

local function pid()
  local f = assert(io.open("/proc/self/stat"))
  local n = f:read("n")
  f:close()
  return n
end

local function sockets()
  return tonumber((sh("find /proc/" .. pid() .. "/fd -lname 'socket:*' | wc -l")))
end

local function session(opts)
  opts = opts or {}
  opts.addr = opts.addr or "127.0.0.1"
  opts.ports = opts.ports or PORTS
  return assert(media.session(opts))
end

-- two sessions pointed at each other
local function pair(codec, addr)
  local a, b = session{ addr = addr }, session{ addr = addr }
  assert(a:set_remote{ addr = addr or "127.0.0.1", port = b:local_port(), codec = codec or "PCMU" })
  assert(b:set_remote{ addr = addr or "127.0.0.1", port = a:local_port(), codec = codec or "PCMU" })
  return a, b
end

-- a UDP socket of our own (LuaSocket) to send crafted packets
local socket = require "socket"
local function rtp(seq, ts, ssrc, pt, payload, marker)
  return string.pack(">BBI2I4I4", 0x80, (marker and 0x80 or 0) | (pt or 0), seq & 0xffff,
                     ts & 0xffffffff, ssrc) .. payload
end

describe("sip.MediaSession", function()
  setup(make_files)

  it("opens an RTP/RTCP pair on an even port of the range, and close() closes both", function()
    local before = sockets()
    local s = session{ ports = "40000-40099" }
    local port = s:local_port()
    assert.are.equal(0, port % 2)
    assert.is_true(port >= 40000 and port + 1 <= 40099)
    assert.are.equal(before + 2, sockets())
    assert.are.equal(1, core.media.count())
    -- both ports are really taken
    local u = socket.udp()
    assert.is_nil(u:setsockname("127.0.0.1", port))
    assert.is_nil(u:setsockname("127.0.0.1", port + 1))
    u:close()
    assert.matches("^sip%.MediaSession 127%.0%.0%.1:%d+$", tostring(s))
    s:close()
    s:close()   -- idempotent
    assert.are.equal(before, sockets())
    assert.are.equal(0, core.media.count())
    assert.are.equal("sip.MediaSession (closed)", tostring(s))
    assert.has_error(function() s:local_port() end, "local_port: the media session is closed")
  end)

  it("draws its ports at random, and fails when the range has no free pair", function()
    local seen, list = {}, {}
    for i = 1, 6 do
      list[i] = session()
      seen[list[i]:local_port()] = true
    end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.are.equal(6, n)
    -- six sessions in ten thousand ports: in order would be a surprise
    local sorted = true
    for i = 2, 6 do
      if list[i]:local_port() ~= list[i - 1]:local_port() + 2 then sorted = false end
    end
    assert.is_false(sorted)
    for _, s in ipairs(list) do s:close() end
    -- a range of one pair, taken by a session of ours (a fixed pair could
    -- be some other socket's ephemeral port)
    local one = session()
    local p = one:local_port()
    local range = p .. "-" .. (p + 1)
    local s2, err = media.session{ addr = "127.0.0.1", ports = range }
    assert.is_nil(s2)
    assert.are.equal("ports: no free pair in " .. range, err)
    one:close()
  end)

  it("checks its options", function()
    assert.has_error(function() media.session{ adr = "127.0.0.1" } end,
                     "media.session: unknown option 'adr'")
    assert.has_error(function() media.session{ ports = "1-x" } end)
    assert.has_error(function() media.session{ ports = 5 } end, "media.session: opts.ports must be a string")
    local s, err = media.session{ addr = "localhost" }
    assert.is_nil(s)
    assert.matches("^addr: not a numeric address", err)
    local a = session()
    finally(function() a:close() end)
    assert.has_error(function() a:set_remote{ addr = "127.0.0.1", port = 4000, codec = "G729" } end)
    assert.has_error(function() a:set_remote{ addr = "127.0.0.1", port = 4000, codecs = "PCMU" } end,
                     "set_remote: unknown option 'codecs'")
    local ok, e2 = a:set_remote{ addr = "::1", port = 4000, codec = "PCMU" }
    assert.is_nil(ok)
    assert.matches("address family", e2)
    ok, e2 = a:set_remote{ addr = "127.0.0.1", port = 4000, codec = "PCMU", ptime = 25 }
    assert.is_nil(ok)
    assert.matches("^ptime", e2)
    assert.are.equal("sendrecv", a:direction())
    assert.are.equal("recvonly", a:direction("recvonly"))
    assert.has_error(function() a:direction("sideways") end)
  end)

  it("plays a 3 s WAV: 150 packets 20 ms apart, one payload type, no sequence gap, marker first", function()
    local a = session()
    local port = helper.free_port()
    local out = DIR .. "/sink.txt"
    os.remove(out)
    local script = DIR .. "/sink.lua"
    local f = assert(io.open(script, "w"))
    -- a packet sink in a process of its own: it notes when each RTP
    -- packet came, and its header, until a second passes without one
    f:write([[
      local socket = require "socket"
      local u = assert(socket.udp())
      assert(u:setsockname("127.0.0.1", tonumber(arg[1])))
      u:settimeout(10)
      local lines = {}
      while true do
        local d = u:receive()
        if not d then break end
        local t = socket.gettime()
        local _, b1, seq, ts, ssrc = string.unpack(">BBI2I4I4", d)
        lines[#lines + 1] = string.format("%.6f %d %d %d %d %d %d", t, b1 & 127, b1 >> 7, seq, ts,
                                          ssrc, #d - 12)
        u:settimeout(1)
      end
      local f = assert(io.open(arg[2], "w"))
      f:write(table.concat(lines, "\n"), "\n")
      f:close()
    ]])
    f:close()
    local sink = helper.spawn({ "lua5.4", script, tostring(port), out }, "sink")
    finally(function() helper.stop_all(); a:close() end)
    helper.spin(0.3)
    assert(a:set_remote{ addr = "127.0.0.1", port = port, codec = "PCMA" })
    local res = { helper.run(function() return media.play(a, F.tone3) end) }
    assert.are.same({ true }, res)
    assert.are.equal(0, sink:wait(10))
    local pkts = {}
    for line in io.lines(out) do
      local t, pt, m, seq, ts, ssrc, len = line:match("^(%S+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$")
      if t then
        pkts[#pkts + 1] = { t = tonumber(t), pt = tonumber(pt), m = tonumber(m), seq = tonumber(seq),
                            ts = tonumber(ts), ssrc = tonumber(ssrc), len = tonumber(len) }
      end
    end
    assert.are.equal(150, #pkts)
    local gaps = {}
    for i, p in ipairs(pkts) do
      assert.are.equal(8, p.pt)
      assert.are.equal(160, p.len)
      assert.are.equal(i == 1 and 1 or 0, p.m)
      assert.are.equal(pkts[1].ssrc, p.ssrc)
      if i > 1 then
        assert.are.equal((pkts[i - 1].seq + 1) % 65536, p.seq)
        assert.are.equal((pkts[i - 1].ts + 160) % 2 ^ 32, p.ts)
        gaps[#gaps + 1] = p.t - pkts[i - 1].t
      end
    end
    table.sort(gaps)
    local median, p95 = gaps[#gaps // 2], gaps[math.ceil(#gaps * 0.95)]
    local span = pkts[#pkts].t - pkts[1].t
    assert.is_true(median > 0.017 and median < 0.023, "median interval " .. median)
    assert.is_true(p95 < 0.035, "95th percentile interval " .. p95)
    assert.is_true(math.abs(span - 2.98) < 0.15, "span " .. span)
    local st = a:stats()
    assert.are.equal(150, st.packets_sent)
    assert.are.equal(150 * 160, st.octets_sent)
    assert.are.equal("PCMA", st.codec)
    assert.are.equal("127.0.0.1:" .. port, st.remote)
  end)

  it("plays 8, 16, 44.1 and 48 kHz stereo and G.711 WAVs to a session that records them", function()
    local a, b = pair("PCMU")
    finally(function() a:close(); b:close() end)
    for _, name in ipairs{ "tone1", "m16", "m44", "st48", "ulaw", "alaw" } do
      local path = DIR .. "/rec-" .. name .. ".wav"
      local got = {}
      helper.run(function()
        sip.spawn(function() got.rec = media.record(b, path, { max = 3, silence = 0.6 }) end)
        got.play = { media.play(a, F[name]) }
        while not got.rec do sip.sleep(0.05) end
      end)
      assert.are.same({ true }, got.play)
      assert.are.equal("silence", got.rec.reason)
      local d, rms, freq = sound(path)
      -- a second of tone; the recording stops 0.6 s into the silence after
      assert.is_true(d > 0.95 and d < 1.1, name .. ": duration " .. d)
      assert.is_true(math.abs(d - got.rec.duration) < 0.001)
      assert.is_true(rms > 0.2, name .. ": rms " .. rms)
      assert.is_true(math.abs(freq - 1000) < 30, name .. ": frequency " .. freq)
    end
    assert.are.equal(0, b:stats().lost)
  end)

  it("plays a list of files in order, and loops until stopped", function()
    local a, b = pair("PCMA")
    finally(function() a:close(); b:close() end)
    local path = DIR .. "/rec-list.wav"
    local got = {}
    helper.run(function()
      sip.spawn(function() got.rec = media.record(b, path, { silence = 0.5 }) end)
      got.play = { media.play(a, { F.tone1, F.m16, F.st48 }) }
      while not got.rec do sip.sleep(0.05) end
    end)
    assert.are.same({ true }, got.play)
    local d = sound(path)
    assert.is_true(d > 2.95 and d < 3.1, "duration " .. d)
    -- one file looped (rewound, not opened again), resampled or not:
    -- it goes on past its end (the count is loose: a slow machine sends
    -- fewer frames in the same time, never more than one late)
    for _, f in ipairs{ F.tone1, F.m16 } do
      local t0 = core.now()
      local sent0 = a:stats().packets_sent
      helper.run(function()
        sip.spawn(function() sip.sleep(2.5); a:stop() end)
        got.loop = { media.play(a, f, { loop = true }) }
      end)
      assert.are.same({ nil, "stopped" }, got.loop)
      assert.is_true(core.now() - t0 > 2.4)
      local sent = a:stats().packets_sent - sent0
      assert.is_true(sent > 75 and sent <= 130, sent .. " packets in 2.5 s of a 1 s file")
    end
  end)

  it("plays a short prompt from the copy it decoded once, and hears a file rewritten on disk anew", function()
    local a, b = pair("PCMU")
    local path = DIR .. "/rewritten.wav"
    finally(function() a:close(); b:close(); os.remove(path) end)
    local function play_and_record(n)
      local rec = DIR .. "/rec-rewritten-" .. n .. ".wav"
      local got = {}
      helper.run(function()
        sip.spawn(function() got.rec = media.record(b, rec, { max = 3, silence = 0.6 }) end)
        got.play = { media.play(a, path) }
        while not got.rec do sip.sleep(0.05) end
      end)
      assert.are.same({ true }, got.play)
      local d, rms, freq = sound(rec)
      os.remove(rec)
      return d, rms, freq
    end
    sox("-n -r 16000 -c 1 -b 16 " .. path .. " synth 1 sine 1000 vol 0.5")
    core.now()
    for n = 1, 2 do       -- the second play is the shared copy's
      local d, rms, freq = play_and_record(n)
      assert.is_true(d > 0.95 and d < 1.1, "duration " .. d)
      assert.is_true(rms > 0.2, "rms " .. rms)
      assert.is_true(math.abs(freq - 1000) < 30, "frequency " .. freq)
    end
    -- the same name, other content (and length): the new sound
    sox("-n -r 8000 -c 1 -b 16 " .. path .. " synth 1.5 sine 400 vol 0.5")
    core.now()
    local d, _, freq = play_and_record(3)
    assert.is_true(d > 1.45 and d < 1.6, "duration " .. d)
    assert.is_true(math.abs(freq - 400) < 30, "frequency " .. freq)
    -- gone from the disk: the error a missing file gives, not the old copy
    os.remove(path)
    local res
    helper.run(function() res = { media.play(a, path) } end)
    assert.is_nil(res[1])
    assert.matches("^file: .*No such file", res[2])
  end)

  it("streams a 10-minute file from disk: it starts at once and is never loaded whole", function()
    local long = DIR .. "/ten-minutes.wav"
    sox("-n -r 8000 -c 1 -b 16 " .. long .. " synth 600 sine 1000 vol 0.5")   -- 9.6 MB
    core.now()      -- the loop's clock again after the wait for sox
    local a, b = pair()
    finally(function() a:close(); b:close(); os.remove(long) end)
    local function rss_kb()
      local f = assert(io.open("/proc/self/status"))
      local kb = tonumber(f:read("a"):match("VmRSS:%s+(%d+)"))
      f:close()
      return kb
    end
    collectgarbage()
    local before = rss_kb()
    local got, grew = {}, 0
    helper.run(function()
      sip.spawn(function()
        sip.sleep(0.5)
        grew = rss_kb() - before
        a:stop()
      end)
      got.play = { media.play(a, long) }
    end)
    assert.are.same({ nil, "stopped" }, got.play)
    assert.is_true(grew < 2048, "RSS grew by " .. grew .. " KiB")
    assert.is_true(a:stats().packets_sent >= 20, "sent " .. a:stats().packets_sent)
  end)

  it("returns nil, \"file: ...\" for a missing, non-audio, truncated or unsupported file, sending nothing", function()
    local a, b = pair()
    finally(function() a:close(); b:close() end)
    local res = {}
    helper.run(function()
      res.missing = { media.play(a, DIR .. "/nope.wav") }
      res.text = { media.play(a, F.text) }
      res.truncated = { media.play(a, F.truncated) }
      res.gsm = { media.play(a, F.gsm) }
      res.three = { media.play(a, F.three) }
      res.second = { media.play(a, { F.tone1, DIR .. "/nope.wav" }) }
      res.rec = { media.record(b, DIR .. "/no/such/dir/x.wav") }
    end)
    assert.is_nil(res.missing[1])
    assert.matches("^file: .*nope%.wav: No such file or directory$", res.missing[2])
    assert.matches("^file: .*not%-audio%.wav: not a sound file", res.text[2])
    assert.matches("^file: .*truncated%.wav: ", res.truncated[2])
    assert.matches("^file: .*gsm%.wav: unsupported format", res.gsm[2])
    assert.matches("^file: .*three%-channels%.wav: unsupported format %(3 channels", res.three[2])
    assert.matches("^file: .*nope%.wav: No such file", res.second[2])
    assert.matches("^file: .*x%.wav: ", res.rec[2])
    helper.spin(0.1)
    assert.are.equal(0, a:stats().packets_sent)
    assert.are.equal(0, b:stats().packets_received)
  end)

  it("raises for wrong arguments, naming the call method", function()
    local a = session()
    finally(function() a:close() end)
    helper.run(function()
      -- at the caller's line, like every public function (sip.check)
      local function err_of(fn)
        local ok, e = pcall(fn)
        assert.is_false(ok)
        return e
      end
      assert.matches("^.-media_spec%.lua:%d+: bad argument #2 to 'call:play' %(unknown option 'lop'%)$",
                     err_of(function() media.play(a, F.tone1, { lop = true }) end))
      assert.matches("bad argument #2 to 'call:play' %(option 'loop' must be a boolean, got number%)",
                     err_of(function() media.play(a, F.tone1, { loop = 1 }) end))
      assert.matches("bad argument #1 to 'call:play' %(file name or list of file names expected",
                     err_of(function() media.play(a, 42) end))
      assert.matches("bad argument #1 to 'call:play' %(an empty list of files%)",
                     err_of(function() media.play(a, {}) end))
      assert.matches("call:play: no media session %(got nil%)", err_of(function() media.play(nil, F.tone1) end))
      assert.matches("bad argument #2 to 'call:record' %(option 'max' must not be negative%)",
                     err_of(function() media.record(a, "x.wav", { max = -1 }) end))
      assert.matches("option 'format' must be", err_of(function() media.record(a, "x.wav", { format = "mp3" }) end))
      assert.matches("unknown tone 'bleep'", err_of(function() media.tone(a, "bleep") end))
      assert.matches("bad argument #2 to 'call:tone' %(unknown option 'duraton'%)",
                     err_of(function() media.tone(a, "busy", { duraton = 1 }) end))
      assert.matches("freqs must be a list", err_of(function() media.tone(a, { freqs = { 1, 2, 3 } }) end))
    end)
    -- a blocking verb outside a luasip coroutine
    assert.has_error(function() media.play(a, F.tone1) end)
  end)

  it("records: max ends it at exactly max seconds; stop and close end waits with their reason", function()
    local a, b = pair("PCMU")
    finally(function() a:close(); b:close() end)
    local got = {}
    local path = DIR .. "/rec-max.wav"
    helper.run(function()
      sip.spawn(function() got.play = { media.play(a, F.tone3) } end)
      got.rec = media.record(b, path, { max = 1 })
      a:stop("enough")
      sip.sleep(0.05)
    end)
    assert.are.equal("max", got.rec.reason)
    assert.are.equal(1, got.rec.duration)
    assert.are.same({ nil, "enough" }, got.play)
    assert.are.equal(1, (sound(path)))
    -- stop() and close(reason) end a recording with that reason
    helper.run(function()
      sip.spawn(function() got.play2 = { media.play(a, F.tone3) } end)
      sip.spawn(function() sip.sleep(0.5); b:stop() end)
      got.rec2 = media.record(b, path)
      sip.spawn(function() sip.sleep(0.3); b:close("hangup"); a:close("hangup") end)
      got.rec3 = media.record(b, path)
      sip.sleep(0.05)
    end)
    assert.are.equal("stopped", got.rec2.reason)
    assert.is_true(got.rec2.duration > 0.4 and got.rec2.duration < 0.6)
    assert.are.equal("hangup", got.rec3.reason)
    assert.are.same({ nil, "hangup" }, got.play2)
    local d = sound(path)
    assert.is_true(math.abs(d - got.rec3.duration) < 0.001)
  end)

  it("records u-law and A-law WAVs, and a beep goes to the peer first", function()
    local a, b = pair("PCMA")
    finally(function() a:close(); b:close() end)
    local got = {}
    helper.run(function()
      sip.spawn(function() got.play = { media.play(a, F.tone1) } end)
      got.ulaw = media.record(b, DIR .. "/rec-ulaw.wav", { format = "ulaw", max = 0.5 })
      got.alaw = media.record(b, DIR .. "/rec-alaw.wav", { format = "alaw", max = 0.3 })
    end)
    assert.matches("u%-law", (sh("sox --i " .. DIR .. "/rec-ulaw.wav")))
    assert.matches("A%-law", (sh("sox --i " .. DIR .. "/rec-alaw.wav")))
    assert.are.equal(0.5, got.ulaw.duration)
    assert.are.equal(0.3, got.alaw.duration)
    -- the beep: b sends a quarter second of 1 kHz, a records it
    local sent = b:stats().packets_sent
    helper.run(function()
      sip.spawn(function() got.beeped = media.record(a, DIR .. "/rec-beep.wav", { silence = 0.4 }) end)
      got.after_beep = media.record(b, DIR .. "/rec-none.wav", { beep = true, max = 0.5 })
      while not got.beeped do sip.sleep(0.05) end
    end)
    assert.are.equal(sent + 13, b:stats().packets_sent)      -- 0.25 s: 12.5 frames
    assert.are.equal("max", got.after_beep.reason)
    local d, rms, freq = sound(DIR .. "/rec-beep.wav")
    assert.is_true(d > 0.24 and d < 0.3, "beep " .. d)
    assert.is_true(rms > 0.05 and math.abs(freq - 1000) < 30, "beep rms " .. rms .. ", " .. freq .. " Hz")
  end)

  it("writes reordered packets in order and lost ones as silence of their length", function()
    local b = session()
    finally(function() b:close() end)
    local u = socket.udp()
    assert(u:setsockname("127.0.0.1", 0))
    local path = DIR .. "/rec-reorder.wav"
    local lost = { [7] = true, [20] = true, [21] = true, [33] = true }
    local order = {}
    for i = 0, 49 do order[#order + 1] = i end
    -- swap neighbours here and there, and one packet three places late
    order[11], order[12] = order[12], order[11]
    order[26], order[27] = order[27], order[26]
    table.insert(order, 45, table.remove(order, 41))
    local got = {}
    local loud = string.rep("\x20", 160)       -- u-law for about -8000
    helper.run(function()
      sip.spawn(function() got.rec = media.record(b, path, { max = 5, silence = 0.5 }) end)
      for _, i in ipairs(order) do
        if not lost[i] then
          u:sendto(rtp(1000 + i, 5000 + 160 * i, 77, 0, loud), "127.0.0.1", b:local_port())
        end
        if i % 4 == 0 then sip.sleep(0.02) end
      end
      while not got.rec do sip.sleep(0.05) end
    end)
    u:close()
    assert.are.equal("silence", got.rec.reason)
    assert.are.equal(1, got.rec.duration)          -- 50 packets of 20 ms
    local samples = wav_samples(path)
    assert.are.equal(8000, #samples)
    for i = 0, 49 do
      local v = samples[i * 160 + 80]
      if lost[i] then
        assert.are.equal(0, v, "packet " .. i .. " should be silence")
      else
        assert.are_not.equal(0, v, "packet " .. i .. " should be there")
      end
    end
    local st = b:stats()
    assert.are.equal(46, st.packets_received)
    assert.are.equal(4, st.lost)
  end)

  it("drops and counts packets that are invalid, of an unknown payload type, or from another source", function()
    local b = session()
    finally(function() b:close() end)
    local u, other = socket.udp(), socket.udp()
    assert(u:setsockname("127.0.0.1", 0))
    assert(other:setsockname("127.0.0.1", 0))
    local port = b:local_port()
    local bad = {
      "\x80\x00\x00",                                               -- short
      string.pack(">BBI2I4I4", 0x40, 0, 1, 1, 1) .. "x",             -- version 1
      string.pack(">BBI2I4I4", 0x85, 0, 1, 1, 1) .. "1234",          -- 5 CSRC, room for 1
      string.pack(">BBI2I4I4", 0x90, 0, 1, 1, 1) .. "\0\0\0\9abcd",  -- extension of 9 words
      string.pack(">BBI2I4I4", 0xa0, 0, 1, 1, 1) .. "ab\200",        -- padding past the end
    }
    helper.run(function()
      for _, p in ipairs(bad) do u:sendto(p, "127.0.0.1", port) end
      u:sendto(rtp(1, 0, 5, 96, string.rep("\255", 160)), "127.0.0.1", port)      -- unknown pt
      u:sendto(rtp(2, 160, 5, 0, string.rep("\255", 160)), "127.0.0.1", port)     -- learned
      other:sendto(rtp(3, 320, 5, 0, string.rep("\255", 160)), "127.0.0.1", port) -- not the peer
      u:sendto(rtp(3, 320, 5, 0, string.rep("\255", 160)), "127.0.0.1", port)
      -- RTCP: garbage, then an RR from the peer's host
      u:sendto("\x81\xc9\x00\x07", "127.0.0.1", port + 1)
      u:sendto(string.pack(">BBI2I4", 0x80, 201, 1, 5), "127.0.0.1", port + 1)
      sip.sleep(0.2)
    end)
    u:close()
    other:close()
    local st = b:stats()
    assert.are.equal(5, st.invalid)
    assert.are.equal(1, st.unknown_pt)
    assert.are.equal(1, st.unexpected_source)
    assert.are.equal(2, st.packets_received)
    assert.are.equal(1, st.rtcp_invalid)
    assert.are.equal(1, st.rtcp_received)
    assert.is_true(st.learned)
  end)

  it("sends to where the peer's RTP comes from once it comes (symmetric RTP)", function()
    local a, b = pair("PCMU")
    finally(function() a:close(); b:close() end)
    -- a believes the peer is elsewhere (a NAT rewrote b's address)
    assert(a:set_remote{ addr = "127.0.0.1", port = 9, codec = "PCMU" })
    helper.run(function()
      sip.spawn(function() media.play(b, F.tone1) end)
      sip.sleep(0.2)
      media.play(a, F.tone1)
    end)
    local sa = a:stats()
    assert.is_true(sa.learned)
    assert.are.equal("127.0.0.1:" .. b:local_port(), sa.remote)
    assert.is_true(b:stats().packets_received >= 45)
  end)

  it("plays tones through spandsp: named ones, a table, with a duration", function()
    local a, b = pair("PCMU")
    finally(function() a:close(); b:close() end)
    local got = {}
    helper.run(function()
      sip.spawn(function() got.rec = media.record(b, DIR .. "/rec-busy.wav", { max = 1 }) end)
      got.busy = { media.tone(a, "busy", { duration = 1 }) }
      sip.sleep(0.4)
      got.beep = { media.tone(a, "beep") }
      got.custom = { media.tone(a, { freqs = { 400 }, on = 100, off = 100 }, { duration = 0.4 }) }
      sip.spawn(function() sip.sleep(0.3); a:stop() end)
      got.ring = { media.tone(a, "ring") }
    end)
    assert.are.same({ true }, got.busy)
    assert.are.same({ true }, got.beep)
    assert.are.same({ true }, got.custom)
    assert.are.same({ nil, "stopped" }, got.ring)
    local d, rms = sound(DIR .. "/rec-busy.wav")
    assert.is_true(d > 0.95, "duration " .. d)
    -- busy is half tone, half silence
    assert.is_true(rms > 0.05, "rms " .. rms)
    local samples = wav_samples(DIR .. "/rec-busy.wav")
    local loud, quiet = 0, 0
    for i = 1, #samples, 80 do
      if math.abs(samples[i]) > 200 or math.abs(samples[i + 1] or 0) > 200 then
        loud = loud + 1
      else
        quiet = quiet + 1
      end
    end
    assert.is_true(loud > 30 and quiet > 30, loud .. " loud, " .. quiet .. " quiet")
  end)

  it("does not send while on hold, and starts a talkspurt after", function()
    local a, b = pair("PCMU")
    finally(function() a:close(); b:close() end)
    a:direction("recvonly")
    local res = { helper.run(function() return media.play(a, F.tone1) end) }
    assert.are.same({ true }, res)
    assert.are.equal(0, a:stats().packets_sent)
    a:direction("sendrecv")
    helper.run(function() media.play(a, F.tone1) end)
    assert.are.equal(50, a:stats().packets_sent)
  end)

  it("exchanges RTCP reports, and a BYE at close", function()
    local a, b = pair("PCMU")
    finally(function() a:close(); b:close() end)
    helper.run(function()
      sip.spawn(function() media.play(b, F.tone3) end)
      media.play(a, F.tone3)
      sip.sleep(2.8)
    end)
    local sa, sb = a:stats(), b:stats()
    assert.is_true(sa.rtcp_sent >= 1 and sb.rtcp_sent >= 1)
    assert.is_true(sa.rtcp_received >= 1 and sb.rtcp_received >= 1)
    assert.are.equal(0, sa.remote_lost)
    assert.is_true(sa.remote_jitter < 0.02)
    -- a round trip is known once a report answers an SR (not always in
    -- the first round, where both report at once)
    assert.is_true(sa.rtt == nil or (sa.rtt >= 0 and sa.rtt < 0.5), "rtt " .. tostring(sa.rtt))
    a:close()
    helper.spin(0.1)
    assert.is_true(b:stats().remote_bye)
    -- what a closed session says: its figures at the close
    local last = a:stats()
    assert.is_true(last.closed)
    assert.are.equal(150, last.packets_sent)
    assert.are.equal(150, last.packets_received)
  end)

  it("paces forty sessions playing at once from the one tick: every packet, in time", function()
    local players, recorders, got = {}, {}, {}
    finally(function()
      for _, s in ipairs(players) do s:close() end
      for _, s in ipairs(recorders) do s:close() end
    end)
    for i = 1, 40 do
      players[i], recorders[i] = pair(i % 2 == 0 and "PCMA" or "PCMU")
    end
    local t0 = core.now()
    helper.run(function()
      for i = 1, 40 do
        sip.spawn(function() got[i] = media.record(recorders[i], DIR .. "/rec-many-" .. i .. ".wav", { max = 0.8 }) end)
      end
      local left = 40
      for i = 1, 40 do
        sip.spawn(function()
          media.play(players[i], F.tone1)
          left = left - 1
        end)
      end
      while left > 0 do sip.sleep(0.05) end
    end)
    local took = core.now() - t0
    assert.is_true(took > 0.95 and took < 1.3, "took " .. took)
    for i = 1, 40 do
      local st = recorders[i]:stats()
      assert.are.equal(50, st.packets_received, "session " .. i)
      assert.are.equal(0, st.lost)
      assert.is_true(st.jitter < 0.01, "jitter " .. st.jitter)
      assert.are.equal("max", got[i].reason)
      assert.are.equal(0.8, got[i].duration)
    end
  end)

  it("works over IPv6", function()
    local probe = socket.udp6 and socket.udp6()
    if not probe or not probe:setsockname("::1", 0) then
      pending("no IPv6 loopback")
      return
    end
    probe:close()
    local a, b = pair("PCMA", "::1")
    finally(function() a:close(); b:close() end)
    assert.matches("^sip%.MediaSession %[::1%]:%d+$", tostring(a))
    helper.run(function()
      sip.spawn(function() media.record(b, DIR .. "/rec-v6.wav", { max = 0.5 }) end)
      media.play(a, F.tone1)
    end)
    assert.are.equal(50, b:stats().packets_received)
    assert.are.equal("[::1]:" .. a:local_port(), b:stats().remote)
  end)
end)

describe("sip.media offer/answer", function()
  local function offer(extra, port, addr, fmts)
    return table.concat({
      "v=0", "o=peer 1 1 IN IP4 " .. (addr or "127.0.0.1"), "s=-",
      "c=IN IP4 " .. (addr or "127.0.0.1"), "t=0 0",
      "m=audio " .. (port or 5000) .. " RTP/AVP " .. (fmts or "8 0 101"),
      "a=rtpmap:8 PCMA/8000", "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000",
      extra }, "\r\n") .. "\r\n"
  end

  it("answers on the session's port with the common codecs, and follows the offer", function()
    local s = session()
    finally(function() s:close() end)
    local text, ours = media.sdp(s, offer("a=ptime:30"), { codecs = { "PCMU", "PCMA", "telephone-event" } })
    assert.matches("m=audio " .. s:local_port() .. " RTP/AVP 8 0 101\r\n", text)
    assert.matches("c=IN IP4 127%.0%.0%.1\r\n", text)
    assert.are.same({ true }, { media.apply(s, offer("a=ptime:30"), ours) })
    local st = s:stats()
    assert.are.equal("PCMA", st.codec)
    assert.are.equal(8, st.pt)
    assert.are.equal(30, st.ptime)
    assert.are.equal("127.0.0.1:5000", st.remote)
    assert.are.equal("sendrecv", s:direction())
    -- hold and resume by re-offers
    media.apply(s, offer("a=sendonly"), ours)
    assert.are.equal("recvonly", s:direction())
    media.apply(s, offer("a=inactive"), ours)
    assert.are.equal("inactive", s:direction())
    media.apply(s, offer("a=sendrecv", 5002, "0.0.0.0"), ours)
    assert.are.equal("inactive", s:direction())
    media.apply(s, offer("a=sendrecv", 5004), ours)
    assert.are.equal("sendrecv", s:direction())
    assert.are.equal("127.0.0.1:5004", s:stats().remote)
    -- only PCMU on our side: PCMU is sent even though PCMA comes first
    local _, only_u = media.sdp(s, offer(""), { codecs = { "PCMU" } })
    media.apply(s, offer(""), only_u)
    assert.are.equal("PCMU", s:stats().codec)
    -- nothing we can send
    local ok, err = media.apply(s, offer("", 5000, nil, "18"))
    assert.is_nil(ok)
    assert.matches("no audio stream", err)
    assert.are.equal("inactive", s:direction())
  end)

  it("offers on the session's port, and takes the answer", function()
    local s = session()
    finally(function() s:close() end)
    local text, ours = media.sdp(s)
    assert.matches("m=audio " .. s:local_port() .. " RTP/AVP 0 8 101\r\n", text)
    assert.is_true(media.apply(s, offer("a=recvonly", 6000, nil, "0 101"), ours))
    assert.are.equal("sendonly", s:direction())
    assert.are.equal("PCMU", s:stats().codec)
  end)
end)

describe("media with SIPp", function()
  setup(make_files)

  it("records what SIPp plays from g711a.pcap into a luasip UA that answered with a session's SDP", function()
    local port = helper.free_port()
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:" .. port })
    local got = {}
    local path = DIR .. "/rec-sipp.wav"
    ua:on("INVITE", function(call)
      local s = session()
      local text, ours = media.sdp(s, call.invite.body, { codecs = { "PCMA", "PCMU" } })
      got.answer = text
      -- the hangup stops the recording (what call.media will do); this
      -- waits first, as a second wait begun from inside the wake of the
      -- answer's breaks call.lua's notify loop
      sip.spawn(function()
        got.why = call:wait()
        s:stop("hangup")
      end)
      assert(call:answer{ sdp = text })
      got.apply = { media.apply(s, call.invite.body, ours) }
      got.rec = media.record(s, path, { max = 20 })
      got.stats = s:stats()
      s:close()
    end)
    local sipp = helper.sipp{ sf = "uac_pcap_audio.xml", port = helper.free_port(),
                              remote = "127.0.0.1:" .. port,
                              args = { "-m", 1, "-s", "ivr", "-mp", helper.free_port(),
                                       "-timeout", "30", "-timeout_error" } }
    finally(function() helper.stop_all(); ua:close() end)
    local rc = sipp:wait(30)
    assert.are.equal(0, rc, sipp.log())
    helper.spin(0.2)
    assert.matches("m=audio %d+ RTP/AVP 8\r\n", got.answer)
    assert.are.same({ true }, got.apply)
    assert.are.equal("bye", got.why)
    assert.are.equal("hangup", got.rec.reason)
    assert.are.equal(236, got.stats.packets_received)
    assert.are.equal(0, got.stats.lost)
    assert.are.equal(236 * 240, got.stats.octets_received)
    -- 236 packets of 30 ms
    local d, rms = sound(path)
    assert.is_true(math.abs(d - 7.08) < 0.05, "duration " .. d)
    assert.is_true(rms > 0.01, "rms " .. rms)
    assert.are.equal(0, core.media.count())
  end)

  it("plays to SIPp's rtp_echo and records the echo on the same session", function()
    local sipp_port = helper.free_port()
    local sipp = helper.sipp{ sn = "uas", port = sipp_port,
                              args = { "-m", 1, "-mp", helper.free_port(), "-rtp_echo",
                                       "-timeout", "30", "-timeout_error" } }
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:" .. helper.free_port() })
    finally(function() helper.stop_all(); ua:close() end)
    local got = {}
    local path = DIR .. "/rec-echo.wav"
    local before = sockets()
    helper.run(function()
      local s <close> = session()
      local offer, ours = media.sdp(s)
      local call = assert(ua:invite("sip:echo@127.0.0.1:" .. sipp_port, { sdp = offer }))
      got.apply = { media.apply(s, call.response.body, ours) }
      sip.spawn(function() got.rec = media.record(s, path, { silence = 0.5, max = 10 }) end)
      got.play = { media.play(s, F.tone3) }
      while not got.rec do sip.sleep(0.05) end
      got.stats = s:stats()
      call:hangup()
    end)
    assert.are.equal(0, sipp:wait(15), sipp.log())
    assert.are.same({ true }, got.apply)
    assert.are.same({ true }, got.play)
    assert.are.equal("silence", got.rec.reason)
    assert.are.equal(150, got.stats.packets_sent)
    assert.are.equal(150, got.stats.packets_received)
    assert.are.equal(0, got.stats.lost)
    assert.are.equal("PCMU", got.stats.codec)
    local d, rms, freq = sound(path)
    assert.is_true(d > 2.9 and d < 3.1, "duration " .. d)
    assert.is_true(rms > 0.2 and math.abs(freq - 1000) < 30)
    -- the session's sockets went with it
    assert.are.equal(before, sockets())
  end)
end)
