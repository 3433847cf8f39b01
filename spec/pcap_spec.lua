--- sip.trace{ pcap = file } and `luasip --pcap FILE`: every message sent
-- and received goes to a pcap file that tshark and sngrep read as SIP.
-- UDP messages are UDP datagrams; TCP and TLS messages are TCP segments
-- (TLS as its plaintext), with sequence numbers that follow each
-- direction of each connection. A message between two UAs of one process
-- is written once, as it went over the wire.
local sip = require "sip"
local helper = require "helper"
local tlscerts = require "tlscerts"

local sh = helper.shell_quote

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>/dev/null"))
  local out = p:read("a")
  p:close()
  return out
end

-- tshark's view: one { method =, status =, call_id =, proto = } per SIP message
local function tshark(file)
  local rows = {}
  local out = run("tshark -r " .. sh(file) .. " -Y sip -T fields -E separator=/t" ..
                  " -e sip.Method -e sip.Status-Code -e sip.Call-ID -e _ws.col.Protocol" ..
                  " -e udp.srcport -e tcp.srcport -e ip.src -e ipv6.src")
  for line in out:gmatch("[^\n]+") do
    local m, st, cid, proto, uport, tport = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)")
    rows[#rows + 1] = { method = m ~= "" and m or nil, status = tonumber(st), call_id = cid,
                        proto = proto, udp = uport ~= "", tcp = tport ~= "", line = line }
  end
  return rows
end

-- The calls sngrep builds from a file, without its interface: the
-- Call-IDs of the dialogs it writes out again (-O); "Dialog count: N" on
-- its output is printed by a timer, which a short file can beat
local function sngrep_calls(file, ...)
  local out = file .. ".sngrep.pcap"
  os.remove(out)
  local args = { ... }
  for i, a in ipairs(args) do args[i] = sh(a) end
  run("timeout 20 sngrep -I " .. sh(file) .. " -N -q -O " .. sh(out) .. " " .. table.concat(args, " ") ..
      " </dev/null")
  local ids, set = {}, {}
  for _, r in ipairs(tshark(out)) do
    if r.call_id ~= "" and not set[r.call_id] then
      set[r.call_id] = true
      ids[#ids + 1] = r.call_id
    end
  end
  os.remove(out)
  table.sort(ids)
  return ids
end

local function flow(rows, call_id)
  local seen = {}
  for _, r in ipairs(rows) do
    if r.call_id == call_id then seen[#seen + 1] = r.method or tostring(r.status) end
  end
  return table.concat(seen, " ")
end

-- one call a -> b, answered, then hung up by a; returns the Call-ID
local function one_call(a, b, uri)
  b:on("INVITE", function(call)
    call:answer()
    call:wait()
  end)
  local call_id
  sip.test.run(function()
    local call = assert(a:invite(uri, { timeout = 5 }))
    call_id = call.call_id
    assert(call:hangup())
  end, 10)
  helper.idle(a, 2)
  return call_id
end

local function tmpfile(name)
  local path = helper.tmp .. "/pcap-" .. math.random(1, 1e9) .. "-" .. name
  os.remove(path)
  return path
end

describe("sip.trace{ pcap = }", function()
  after_each(function() sip.trace(false) end)

  it("writes a UDP call that tshark decodes (INVITE 200 ACK BYE 200, one Call-ID) and sngrep lists", function()
    local file = tmpfile("udp.pcap")
    finally(function() os.remove(file) end)
    local a = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    local b = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    finally(function() a:close(); b:close() end)
    sip.trace{ pcap = file }
    local call_id = one_call(a, b, b:uri("bob"))
    sip.trace(false)
    local rows = tshark(file)
    -- each message once: both UAs are in this process, the wire saw it once
    assert.are.equal("INVITE 200 ACK BYE 200", flow(rows, call_id))
    assert.are.equal(5, #rows)
    for _, r in ipairs(rows) do assert.is_true(r.udp, r.line) end
    -- sngrep lists the call (-c: dialogs that start with an INVITE), and
    -- its match expression finds it by its Call-ID
    assert.are.same({ call_id }, sngrep_calls(file, "-c"))
    assert.are.same({ call_id }, sngrep_calls(file, "-c", call_id))
    assert.are.same({}, sngrep_calls(file, "-c", "no-such-call-id"))
  end)

  it("writes TCP and TLS (as plaintext) as TCP segments that tshark reassembles", function()
    local C = tlscerts.generate()
    finally(function() C:remove() end)
    local file = tmpfile("stream.pcap")
    finally(function() os.remove(file) end)
    local tls = { cert = C.server.cert, key = C.server.key, cafile = C.ca }
    local a = assert(sip.ua{ listen = { "tcp:127.0.0.1:0", "tls:127.0.0.1:0" }, tls = tls })
    local b = assert(sip.ua{ listen = { "tcp:127.0.0.1:0", "tls:127.0.0.1:0" }, tls = tls })
    finally(function() a:close(); b:close() end)
    b:on("MESSAGE", function() return 200 end)
    sip.trace{ pcap = file }
    local tcp_id = one_call(a, b, b:uri("bob", 1))
    local tls_id = one_call(a, b, (b:uri("bob", 2):gsub("127%.0%.0%.1", "localhost")))
    -- a message larger than one frame's payload is split in two segments
    local big = ("x"):rep(3000)
    sip.test.run(function()
      local res = assert(a:request("MESSAGE", b:uri("bob", 1), { body = big, timeout = 5 }))
      assert.are.equal(200, res.status)
    end, 10)
    sip.trace(false)
    local rows = tshark(file)
    assert.are.equal("INVITE 200 ACK BYE 200", flow(rows, tcp_id))
    assert.are.equal("INVITE 200 ACK BYE 200", flow(rows, tls_id))
    for _, r in ipairs(rows) do assert.is_true(r.tcp, r.line) end
    local found
    for _, r in ipairs(rows) do
      if r.method == "MESSAGE" then found = r end
    end
    assert.truthy(found, "the MESSAGE was not decoded")
    local body = run("tshark -r " .. sh(file) .. " -Y 'sip.Method == \"MESSAGE\"' -T fields -e sip.Content-Length")
    assert.are.equal("3000", body:match("%d+"))
    local both = { tcp_id, tls_id }
    table.sort(both)
    assert.are.same(both, sngrep_calls(file, "-c"))
  end)

  it("writes IPv6 frames", function()
    local a = sip.ua{ listen = "udp:[::1]:0" }
    if not a then pending("no IPv6 loopback") return end
    local file = tmpfile("v6.pcap")
    finally(function() os.remove(file) end)
    local b = assert(sip.ua{ listen = "udp:[::1]:0" })
    finally(function() a:close(); b:close() end)
    sip.trace{ pcap = file }
    local call_id = one_call(a, b, b:uri("bob"))
    sip.trace(false)
    assert.are.equal("INVITE 200 ACK BYE 200", flow(tshark(file), call_id))
    assert.matches("::1", run("tshark -r " .. sh(file) .. " -T fields -e ipv6.src"))
  end)

  it("keeps each frame on disk as it is written (a crash loses nothing traced)", function()
    local file = tmpfile("flush.pcap")
    finally(function() os.remove(file) end)
    local a = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    local b = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    finally(function() a:close(); b:close() end)
    sip.trace{ pcap = file }
    sip.test.run(function()
      assert(a:request("OPTIONS", b:uri(), { timeout = 5 }))
    end, 5)
    -- still open: read what is on disk now
    local rows = tshark(file)
    assert.are.equal(2, #rows)
    -- a second sip.trace closes the first file and starts the new one
    local file2 = tmpfile("flush2.pcap")
    finally(function() os.remove(file2) end)
    sip.trace{ pcap = file2, print = function() end }
    sip.test.run(function()
      assert(a:request("OPTIONS", b:uri(), { timeout = 5 }))
    end, 5)
    sip.trace(false)
    assert.are.equal(2, #tshark(file))
    assert.are.equal(2, #tshark(file2))
  end)

  it("combines a pcap with the other forms, and the function gets the local address", function()
    local file = tmpfile("combo.pcap")
    finally(function() os.remove(file) end)
    local a = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    local b = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
    finally(function() a:close(); b:close() end)
    local seen = {}
    sip.trace{ pcap = file, print = function(dir, proto, peer, text, here)
      seen[#seen + 1] = { dir = dir, peer = peer, here = here }
    end }
    sip.test.run(function()
      assert(a:request("OPTIONS", b:uri(), { timeout = 5 }))
    end, 5)
    sip.trace(false)
    assert.are.equal(4, #seen)
    local aa, ba = a:address():match("^udp:(.*)$"), b:address():match("^udp:(.*)$")
    assert.same({ dir = "out", peer = ba, here = aa }, seen[1])
    assert.same({ dir = "in", peer = aa, here = ba }, seen[2])
    assert.are.equal(2, #tshark(file))
  end)

  it("raises for an unknown option or a file that cannot be created, naming sip.trace", function()
    helper.raises("bad argument #1 to 'sip.trace' %(unknown option 'pcapp'%)",
                  sip.trace, { pcapp = "x.pcap" })
    helper.raises("bad argument #1 to 'sip.trace' %(option 'pcap' must be a string",
                  sip.trace, { pcap = true })
    helper.raises("bad argument #1 to 'sip.trace' %(option 'pcap': .*No such file",
                  sip.trace, { pcap = "/nonexistent-dir/x.pcap" })
    local err = helper.raises("unknown option", function() sip.trace{ ladder = true, nope = 1 } end)
    assert.matches("pcap_spec.lua:%d+:", err)
  end)
end)

describe("luasip --pcap", function()
  it("captures a script's messages, also when the script calls sip.trace(false)", function()
    local file = tmpfile("runner.pcap")
    local script = tmpfile("runner.lua")
    finally(function() os.remove(file); os.remove(script) end)
    local f = assert(io.open(script, "w"))
    f:write([[
      local sip = require "sip"
      sip.trace(false)
      local b = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
      local a = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
      b:on("INVITE", function(call) call:answer(); call:wait() end)
      local call = assert(a:invite(b:uri("bob"), { timeout = 5 }))
      print("CALLID " .. call.call_id)
      call:hangup()
      a:close(); b:close()
    ]])
    f:close()
    local out = run(sh(helper.root .. "/bin/luasip") .. " --pcap " .. sh(file) .. " --ladder " .. sh(script))
    local call_id = out:match("CALLID (%S+)")
    assert.truthy(call_id, out)
    assert.are.equal("INVITE 200 ACK BYE 200", flow(tshark(file), call_id))
    -- the ladder: one row per message, the INVITE from a's column to b's
    assert.matches("|%-+ INVITE %-+>|", out)
    assert.matches("|<%-+ 200 OK %(BYE%) %-+|", out)
    local rc = os.execute(sh(helper.root .. "/bin/luasip") .. " --pcap /nonexistent-dir/x.pcap -e 'x=1' 2>/dev/null")
    assert.is_not_true(rc)
  end)
end)
