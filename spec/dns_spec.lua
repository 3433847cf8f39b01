--- RFC 3263 on the loop (issue 18): requests to a host name are located
-- by NAPTR, SRV and A/AAAA through c-ares, never blocking the loop, and
-- fail over to the next target on a transport error, an ICMP error, a
-- 503 or Timer F. A real DNS server answers: dnsmasq, started on a free
-- loopback port with a generated configuration (srv-host, naptr-record,
-- host-record) and stopped by each test, on failure too. Bad answers come
-- from a fake server of our own on a raw socket.
local sip = require "sip"
local core = require "sip.core"
local helper = require "helper"

local uas = {}
local function track(ua)
  uas[#uas + 1] = assert(ua)
  return ua
end
local function close_all()
  for _, ua in ipairs(uas) do ua:close() end
  uas = {}
end

local function port_of(ua)
  return tonumber(ua:address():match(":(%d+)$"))
end

-- dnsmasq on 127.0.0.1:<free port> serving the lines given (and nothing
-- else: the .test domain is local, so unknown names are NXDOMAIN).
-- Returns { port, queries() (how many it was asked so far) }.
local function dnsmasq(lines, ttl)
  local port = helper.free_port()
  local id = tostring(math.random(1, 1e9))
  local conf = helper.tmp .. "/dnsmasq-" .. id .. ".conf"
  local log = helper.tmp .. "/dnsmasq-" .. id .. ".queries"
  local f = assert(io.open(conf, "w"))
  f:write("local=/test/\nlocal-ttl=", tostring(ttl or 300), "\n", table.concat(lines, "\n"), "\n")
  f:close()
  local proc = helper.spawn({ "dnsmasq", "--keep-in-foreground", "--port=" .. port,
    "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
    "--conf-file=" .. conf, "--log-queries", "--log-facility=" .. log,
    "--pid-file=" .. helper.tmp .. "/dnsmasq-" .. id .. ".pid" }, "dnsmasq")
  local function read()
    local lf = io.open(log)
    if not lf then return "" end
    local s = lf:read("a")
    lf:close()
    return s
  end
  local deadline = core.now() + 5
  while not read():find("started", 1, true) do
    assert(core.now() < deadline and not proc.done(), "dnsmasq did not start: " .. proc.log() .. read())
    core.step(0.02)
  end
  return {
    port = port,
    server = "127.0.0.1:" .. port,
    queries = function()
      local n = 0
      for _ in read():gmatch("query%[") do n = n + 1 end
      return n
    end,
  }
end

-- a UA using that server (t1 small where Timer F must pass quickly)
local function client(dns, opts)
  opts = opts or {}
  opts.dns = opts.dns or { servers = { dns.server }, timeout = 2 }
  opts.listen = opts.listen or "udp:127.0.0.1:0"
  return track(sip.ua(opts))
end

-- a UA answering OPTIONS with `status` (200) and recording what came
local function server(listen, status, headers)
  local seen = {}
  local ua = track(sip.ua{ listen = listen })
  ua:on("OPTIONS", function(req)
    seen[#seen + 1] = req.transport
    return status or 200, nil, headers and { headers = headers } or nil
  end)
  return ua, seen
end

describe("RFC 3263 with dnsmasq", function()
  after_each(function()
    close_all()
    helper.stop_all()
  end)

  it("NAPTR then SRV choose TCP over UDP by NAPTR order", function()
    local tcp, tcp_seen = server("tcp:127.0.0.1:0")
    local udp, udp_seen = server("udp:127.0.0.1:0")
    local dns = dnsmasq{
      "naptr-record=nap.test,10,50,s,SIP+D2T,,_sip._tcp.nap.test",
      "naptr-record=nap.test,20,50,s,SIP+D2U,,_sip._udp.nap.test",
      "srv-host=_sip._tcp.nap.test,tcp.nap.test," .. port_of(tcp) .. ",10,0",
      "srv-host=_sip._udp.nap.test,udp.nap.test," .. port_of(udp) .. ",10,0",
      "host-record=tcp.nap.test,127.0.0.1",
      "host-record=udp.nap.test,127.0.0.1",
    }
    local ua = client(dns)
    helper.run(function()
      local res, err = ua:request("OPTIONS", "sip:bob@nap.test")
      assert.is_nil(err)
      assert.equal(200, res.status)
      local list = assert(sip.resolve("sip:nap.test", { ua = ua }))
      assert.same({ transport = "tcp", addr = "127.0.0.1", port = port_of(tcp), priority = 10, weight = 0 },
                  list[1])
      assert.same({ transport = "udp", addr = "127.0.0.1", port = port_of(udp), priority = 10, weight = 0 },
                  list[2])
      -- the same through sip.resolve's own resolver for these servers
      local again = assert(sip.resolve("sip:nap.test", { servers = { dns.server }, timeout = 2 }))
      assert.equal("tcp", again[1].transport)
    end)
    assert.same({ "TCP" }, tcp_seen)
    assert.same({}, udp_seen)
  end)

  it("tries SRV targets by priority and fails over when the first refuses the connection", function()
    local live, seen = server("tcp:127.0.0.1:0")
    local dead = helper.free_port()         -- nobody listens there
    local dns = dnsmasq{
      "srv-host=_sip._tcp.fo.test,live.fo.test," .. port_of(live) .. ",20,0",
      "srv-host=_sip._tcp.fo.test,dead.fo.test," .. dead .. ",10,0",
      "host-record=live.fo.test,127.0.0.1",
      "host-record=dead.fo.test,127.0.0.1",
    }
    local ua = client(dns)
    helper.run(function()
      local list = assert(sip.resolve("sip:fo.test;transport=tcp", { ua = ua }))
      assert.equal(2, #list)
      assert.same({ dead, 10 }, { list[1].port, list[1].priority })
      assert.same({ port_of(live), 20 }, { list[2].port, list[2].priority })
      local t0 = sip.now()
      local res, err = ua:request("OPTIONS", "sip:bob@fo.test;transport=tcp")
      assert.is_nil(err)
      assert.equal(200, res.status)
      assert.is_true(sip.now() - t0 < 2)
      -- the dead one is blacklisted: it goes last now
      list = assert(sip.resolve("sip:fo.test;transport=tcp", { ua = ua }))
      assert.same({ port_of(live), dead }, { list[1].port, list[2].port })
    end)
    assert.same({ "TCP" }, seen)
  end)

  it("fails over at once on an ICMP port unreachable (UDP)", function()
    local live, seen = server("udp:127.0.0.1:0")
    local dead = helper.free_port()
    local dns = dnsmasq{
      "srv-host=_sip._udp.icmp.test,dead.icmp.test," .. dead .. ",10,0",
      "srv-host=_sip._udp.icmp.test,live.icmp.test," .. port_of(live) .. ",20,0",
      "host-record=dead.icmp.test,127.0.0.1",
      "host-record=live.icmp.test,127.0.0.1",
    }
    local ua = client(dns)
    helper.run(function()
      local t0 = sip.now()
      local res, err = ua:request("MESSAGE", "sip:bob@icmp.test", { body = "hi" })
      assert.is_nil(err)
      assert.equal(405, res.status)  -- the live UA serves OPTIONS only
      assert.is_true(sip.now() - t0 < 1)
    end)
    assert.same({}, seen)
  end)

  it("fails over when the first target times out (Timer F) and then skips it (blacklist)", function()
    local silent = sip.test.peer{ transport = "udp", retransmissions = true }
    local live, seen = server("udp:127.0.0.1:0")
    local dns = dnsmasq{
      "srv-host=_sip._udp.to.test,silent.to.test," .. silent.port .. ",10,0",
      "srv-host=_sip._udp.to.test,live.to.test," .. port_of(live) .. ",20,0",
      "host-record=silent.to.test,127.0.0.1",
      "host-record=live.to.test,127.0.0.1",
    }
    local ua = client(dns, { t1 = 0.05, t2 = 0.2 })      -- Timer F: 3.2 s
    helper.run(function()
      local t0 = sip.now()
      local res, err = ua:request("OPTIONS", "sip:bob@to.test")
      local took = sip.now() - t0
      assert.is_nil(err)
      assert.equal(200, res.status)
      assert.is_true(took > 3 and took < 5, "took " .. took)
      local got = #silent:queued()
      assert.is_true(got >= 2, "retransmissions to the silent target: " .. got)
      -- the next request skips the dead target
      t0 = sip.now()
      res = assert(ua:request("OPTIONS", "sip:bob@to.test"))
      assert.equal(200, res.status)
      assert.is_true(sip.now() - t0 < 1)
      sip.sleep(0.2)
      assert.equal(got, #silent:queued())
    end, 20)
    silent:close()
    assert.same({ "UDP", "UDP" }, seen)
  end)

  it("a 503 from the first target passes the request (and a call) to the second", function()
    local busy_seen, busy_calls = 0, 0
    local busy = track(sip.ua{ listen = "udp:127.0.0.1:0" })
    busy:on("OPTIONS", function() busy_seen = busy_seen + 1; return 503 end)
    busy:on("INVITE", function(call) busy_calls = busy_calls + 1; call:reject(503) end)
    local ok_calls = 0
    local ok, ok_seen = server("udp:127.0.0.1:0")
    ok:on("INVITE", function(call)
      ok_calls = ok_calls + 1
      call:answer()
      call:wait()
    end)
    local dns = dnsmasq{
      "srv-host=_sip._udp.busy.test,busy.busy.test," .. port_of(busy) .. ",10,0",
      "srv-host=_sip._udp.busy.test,ok.busy.test," .. port_of(ok) .. ",20,0",
      "host-record=busy.busy.test,127.0.0.1",
      "host-record=ok.busy.test,127.0.0.1",
    }
    local ua = client(dns)
    helper.run(function()
      local res, err = ua:request("OPTIONS", "sip:bob@busy.test")
      assert.is_nil(err)
      assert.equal(200, res.status)
      local call, cerr = ua:invite("sip:bob@busy.test")
      assert.is_nil(cerr)
      assert.equal("confirmed", call.state)
      call:hangup()
      -- a 503 without Retry-After blacklists nothing: the busy one is asked again
      res = assert(ua:request("OPTIONS", "sip:bob@busy.test"))
      assert.equal(200, res.status)
    end)
    assert.equal(2, busy_seen)
    assert.equal(1, busy_calls)
    assert.equal(1, ok_calls)
    assert.equal(2, #ok_seen)
  end)

  it("a 503 with Retry-After puts its target last for that time", function()
    local busy, busy_seen = server("udp:127.0.0.1:0", 503, { ["Retry-After"] = "60" })
    local ok, ok_seen = server("udp:127.0.0.1:0")
    local dns = dnsmasq{
      "srv-host=_sip._udp.ra.test,busy.ra.test," .. port_of(busy) .. ",10,0",
      "srv-host=_sip._udp.ra.test,ok.ra.test," .. port_of(ok) .. ",20,0",
      "host-record=busy.ra.test,127.0.0.1",
      "host-record=ok.ra.test,127.0.0.1",
    }
    local ua = client(dns)
    helper.run(function()
      for _ = 1, 3 do
        local res = assert(ua:request("OPTIONS", "sip:bob@ra.test"))
        assert.equal(200, res.status)
      end
    end)
    assert.equal(1, #busy_seen)
    assert.equal(3, #ok_seen)
  end)

  it("every target failing gives the last one's outcome", function()
    local busy = server("udp:127.0.0.1:0", 503)
    local dead = helper.free_port()
    local dns = dnsmasq{
      "srv-host=_sip._udp.all.test,a.all.test," .. dead .. ",10,0",
      "srv-host=_sip._udp.all.test,b.all.test," .. port_of(busy) .. ",20,0",
      "host-record=a.all.test,127.0.0.1",
      "host-record=b.all.test,127.0.0.1",
      "srv-host=_sip._udp.none.test,a.none.test," .. dead .. ",10,0",
      "host-record=a.none.test,127.0.0.1",
    }
    local ua = client(dns)
    helper.run(function()
      local res, err = ua:request("OPTIONS", "sip:bob@all.test")
      assert.is_nil(err)
      assert.equal(503, res.status)
      res, err = ua:request("OPTIONS", "sip:bob@none.test")
      assert.is_nil(res)
      assert.matches("^transport: ", err)
    end)
  end)

  it("caches answers for their TTL: a second request asks nothing", function()
    local live = server("udp:127.0.0.1:0")
    local lines = {
      "srv-host=_sip._udp.ttl.test,h.ttl.test," .. port_of(live) .. ",10,0",
      "host-record=h.ttl.test,127.0.0.1",
    }
    local dns = dnsmasq(lines, 300)
    local ua = client(dns)
    helper.run(function()
      assert.equal(200, assert(ua:request("OPTIONS", "sip:bob@ttl.test")).status)
      local n = dns.queries()
      -- NAPTR, three SRV, A and AAAA
      assert.equal(6, n)
      assert.equal(200, assert(ua:request("OPTIONS", "sip:bob@ttl.test")).status)
      assert.equal(200, assert(ua:request("OPTIONS", "sip:alice@ttl.test")).status)
      sip.sleep(0.1)
      assert.equal(n, dns.queries())
    end)
    -- with a TTL of 1 s the records are asked again once it has passed
    -- (the negative answers, without a SOA, are kept 30 s)
    local short = dnsmasq(lines, 1)
    local ua2 = client(short)
    helper.run(function()
      assert.equal(200, assert(ua2:request("OPTIONS", "sip:bob@ttl.test")).status)
      local n = short.queries()
      assert.equal(200, assert(ua2:request("OPTIONS", "sip:bob@ttl.test")).status)
      assert.equal(n, short.queries())
      sip.sleep(1.2)
      assert.equal(200, assert(ua2:request("OPTIONS", "sip:bob@ttl.test")).status)
      sip.sleep(0.1)
      -- the SRV and A records expired (the AAAA NODATA did not)
      assert.equal(n + 2, short.queries())
    end)
    -- TTL 0 (dnsmasq's default) is kept one second: a request and what
    -- follows at once share one lookup
    local zero = dnsmasq(lines, 0)
    local ua3 = client(zero)
    helper.run(function()
      assert.equal(200, assert(ua3:request("OPTIONS", "sip:bob@ttl.test")).status)
      local n = zero.queries()
      assert.equal(200, assert(ua3:request("OPTIONS", "sip:bob@ttl.test")).status)
      assert.equal(n, zero.queries())
      sip.sleep(1.1)
      assert.equal(200, assert(ua3:request("OPTIONS", "sip:bob@ttl.test")).status)
      sip.sleep(0.1)
      assert.is_true(zero.queries() > n)
    end)
  end)

  it("a name that does not exist: nil, \"dns: ...\"", function()
    local dns = dnsmasq{ "txt-record=noaddr.test,nothing" }
    local ua = client(dns)
    helper.run(function()
      local res, err = ua:request("OPTIONS", "sip:bob@nowhere.test")
      assert.is_nil(res)
      assert.equal("dns: nowhere.test: not found", err)
      local call, cerr = ua:invite("sip:bob@nowhere.test")
      assert.is_nil(call)
      assert.equal("dns: nowhere.test: not found", cerr)
      local list, rerr = sip.resolve("sip:nowhere.test", { ua = ua })
      assert.is_nil(list)
      assert.equal("dns: nowhere.test: not found", rerr)
      -- a name that exists, with no SIP record and no address
      list, rerr = sip.resolve("sip:noaddr.test", { ua = ua })
      assert.is_nil(list)
      assert.equal("dns: noaddr.test: no address", rerr)
    end)
  end)

  it("A/AAAA only when the URI has a port; the transport parameter picks the SRV", function()
    local live, seen = server("tcp:127.0.0.1:0")
    local dns = dnsmasq{
      "srv-host=_sip._udp.p.test,nobody.p.test,9,10,0",
      "srv-host=_sip._tcp.p.test,h.p.test," .. port_of(live) .. ",10,0",
      "host-record=p.test,127.0.0.1",
      "host-record=h.p.test,127.0.0.1",
    }
    local ua = client(dns)
    helper.run(function()
      local list = assert(sip.resolve("sip:p.test:5099", { ua = ua }))
      assert.same({ { transport = "udp", addr = "127.0.0.1", port = 5099, priority = 0, weight = 0 } }, list)
      list = assert(sip.resolve("sip:p.test;transport=tcp", { ua = ua }))
      assert.same({ "tcp", port_of(live) }, { list[1].transport, list[1].port })
      assert.equal(200, assert(ua:request("OPTIONS", "sip:bob@p.test:" .. port_of(live) ..
                                          ";transport=tcp")).status)
      assert.equal(200, assert(ua:request("OPTIONS", "sip:bob@p.test;transport=tcp")).status)
    end)
    assert.same({ "TCP", "TCP" }, seen)
  end)

  it("an in-dialog request to a name no longer in the cache waits for its lookup", function()
    local port = helper.free_port()
    local callee = track(sip.ua{ listen = "udp:127.0.0.1:" .. port,
                                 contact = "<sip:bob@callee.dlg.test:" .. port .. ">" })
    local got = {}
    callee:on("INVITE", function(call)
      call:answer()
      call:on("info", function(_, req) got[#got + 1] = req.method; return 200 end)
      call:wait()
      got[#got + 1] = call.ended_why
    end)
    local dns = dnsmasq({ "host-record=callee.dlg.test,127.0.0.1" }, 1)
    local ua = client(dns)
    helper.run(function()
      local call = assert(ua:invite("sip:bob@callee.dlg.test:" .. port))
      assert.equal("sip:bob@callee.dlg.test:" .. port, call.remote_target)
      local n = dns.queries()
      sip.sleep(1.2)                  -- the A record's TTL has passed
      local res = assert(call:request("INFO", { body = "x" }))
      assert.equal(200, res.status)
      call:hangup()
      sip.sleep(0.2)
      assert.is_true(dns.queries() > n)
    end)
    assert.same({ "INFO", "bye" }, got)
  end)

  it("the ACK to a Contact name not in the cache goes with the 2xx's retransmission", function()
    local port = helper.free_port()
    local callee = track(sip.ua{ listen = "udp:127.0.0.1:" .. port,
                                 contact = "<sip:bob@contact.ack.test:" .. port .. ">" })
    local acked, took
    callee:on("INVITE", function(call)
      local t0 = sip.now()
      acked = call:answer()
      took = sip.now() - t0
      call:wait()
    end)
    local dns = dnsmasq{ "host-record=callee.ack.test,127.0.0.1", "host-record=contact.ack.test,127.0.0.1" }
    local ua = client(dns)
    local ticks, stop = 0, false
    helper.run(function()
      sip.spawn(function() while not stop do sip.sleep(0.05); ticks = ticks + 1 end end)
      local call = assert(ua:invite("sip:bob@callee.ack.test:" .. port))
      sip.sleep(1)
      call:hangup()
      stop = true
    end)
    assert.is_true(acked)
    assert.is_true(took > 0.4 and took < 1, "ACKed after " .. tostring(took))
    assert.is_true(ticks >= 17, ticks .. " ticks")
  end)

  it("orders one priority's targets at random by SRV weight", function()
    local dns = dnsmasq{
      "srv-host=_sip._udp.w.test,heavy.w.test,5060,10,90",
      "srv-host=_sip._udp.w.test,light.w.test,5061,10,10",
      "host-record=heavy.w.test,127.0.0.1",
      "host-record=light.w.test,127.0.0.1",
    }
    local ua = client(dns)
    local heavy = 0
    helper.run(function()
      for _ = 1, 200 do
        local list = assert(sip.resolve("sip:w.test;transport=udp", { ua = ua }))
        assert.equal(2, #list)
        if list[1].port == 5060 then heavy = heavy + 1 end
      end
    end)
    assert.is_true(heavy > 150 and heavy < 200, "heavy first " .. heavy .. " times of 200")
  end)
end)

-- A DNS message for the query `q` with `answers` (already encoded RRs)
local function dns_reply(q, flags, answers, count)
  local id = q:sub(1, 2)
  local qlen = 12
  repeat
    local n = q:byte(qlen + 1)
    qlen = qlen + 1 + n
  until n == 0
  local question = q:sub(13, qlen + 4)
  return id .. string.pack(">I2I2I2I2I2", flags, 1, count or #answers, 0, 0) .. question ..
         table.concat(answers)
end

local function qname(q)
  local labels, i = {}, 13
  while q:byte(i) ~= 0 do
    local n = q:byte(i)
    labels[#labels + 1] = q:sub(i + 1, i + n)
    i = i + 1 + n
  end
  return table.concat(labels, "."), string.unpack(">I2", q, i + 1)
end

local function encode_name(name)
  local out = {}
  for label in name:gmatch("[^.]+") do out[#out + 1] = string.char(#label) .. label end
  return table.concat(out) .. "\0"
end

local function rr(name, rtype, rdata)
  return encode_name(name) .. string.pack(">I2I2I4I2", rtype, 1, 60, #rdata) .. rdata
end

-- a fake DNS server answering every query with reply(query) (or nothing)
local function fake_dns(reply)
  local sock = assert(core.socket.open("udp", "127.0.0.1", 0))
  local running = true
  sip.spawn(function()
    while running do
      local data, from = sock:recv()
      if data then
        local r = reply(data)
        if r then sock:send(r, from) end
      else
        sip.sleep(0.005)
      end
    end
  end)
  return {
    server = sock:address(),
    stop = function()
      running = false
      sock:close()
    end,
  }
end

describe("RFC 3263: bad answers and slow servers", function()
  after_each(close_all)

  local function ask(srv, uri)
    local ua = track(sip.ua{ dns = { servers = { srv }, timeout = 1 } })
    local res, err = ua:request("OPTIONS", uri)
    -- the UA still works afterwards
    local peer = track(sip.ua{})
    assert.equal(200, assert(ua:request("OPTIONS", peer:uri("x"))).status)
    return res, err
  end

  local cases = {
    truncated = {
      function(q) return dns_reply(q, 0x8180, { "\192\12\0" }, 1) end,
      "^dns: bad%.test: bad answer$",
    },
    ["truncated flag (TCP retry refused)"] = {
      function(q) return dns_reply(q, 0x8380, {}) end,
      "^dns: bad%.test: ",
    },
    ["CNAME loop"] = {
      function(q)
        local name, t = qname(q)
        if t == 1 or t == 28 then
          return dns_reply(q, 0x8180, { rr(name, 5, encode_name("x." .. name)),
                                        rr("x." .. name, 5, encode_name(name)) })
        end
        return dns_reply(q, 0x8180, {})
      end,
      "^dns: bad%.test: no address$",
    },
    ["SRV to itself"] = {
      function(q)
        local name, t = qname(q)
        if t == 33 then
          return dns_reply(q, 0x8180, { rr(name, 33, string.pack(">I2I2I2", 10, 0, 5060) ..
                                                     encode_name(name)) })
        end
        return dns_reply(q, 0x8180, {})
      end,
      "^dns: bad%.test: no address$",
    },
    ["SRV to nothing (\".\")"] = {
      function(q)
        local name, t = qname(q)
        if t == 33 then
          return dns_reply(q, 0x8180, { rr(name, 33, string.pack(">I2I2I2", 0, 0, 0) .. "\0") })
        end
        return dns_reply(q, 0x8180, {})
      end,
      "^dns: bad%.test: service not available$",
    },
    ["NAPTR to a name without SRV or address"] = {
      function(q)
        local name, t = qname(q)
        if t == 35 then
          return dns_reply(q, 0x8180, { rr(name, 35, string.pack(">I2I2", 10, 10) .. "\1s\7SIP+D2U\0" ..
                                                     encode_name("_sip._udp.void.test")) })
        end
        return dns_reply(q, 0x8183, {})
      end,
      "^dns: bad%.test: not found$",
    },
    ["garbage (wrong id): timeout"] = {
      function(q) return "\0\0" .. q:sub(3) .. "junk" end,
      "^dns: bad%.test: timeout$",
    },
  }
  for name, case in pairs(cases) do
    it(name .. ": nil, \"dns: ...\", never a crash", function()
      helper.run(function()
        local fake = fake_dns(case[1])
        local res, err = ask(fake.server, "sip:bob@bad.test")
        fake.stop()
        assert.is_nil(res)
        assert.matches(case[2], err)
      end, 15)
    end)
  end

  it("the loop keeps its pace while the DNS server is silent or absent", function()
    local silent = assert(core.socket.open("udp", "127.0.0.1", 0))   -- never read
    helper.run(function()
      local ticks, stop = 0, false
      sip.spawn(function()
        while not stop do
          sip.sleep(0.05)
          ticks = ticks + 1
        end
      end)
      local ua = track(sip.ua{ dns = { servers = { silent:address() }, timeout = 1 } })
      local t0 = sip.now()
      local res, err = ua:request("OPTIONS", "sip:bob@slow.test")
      local took = sip.now() - t0
      assert.is_nil(res)
      assert.equal("dns: slow.test: timeout", err)
      assert.is_true(took >= 0.9 and took < 1.5, "took " .. took)
      assert.is_true(ticks >= math.floor(took / 0.05) - 3, ticks .. " ticks in " .. took .. " s")
      -- a call waits the same way
      t0 = sip.now()
      local call, cerr = ua:invite("sip:bob@slow.test")
      assert.is_nil(call)
      assert.equal("dns: slow.test: timeout", cerr)
      assert.is_true(sip.now() - t0 < 1.5)
      -- nobody at all on the port: ICMP, at once
      local absent = track(sip.ua{ dns = { servers = { "127.0.0.1:" .. helper.free_port() } } })
      t0 = sip.now()
      res, err = absent:request("OPTIONS", "sip:bob@slow.test")
      assert.is_nil(res)
      assert.equal("dns: slow.test: server unreachable", err)
      assert.is_true(sip.now() - t0 < 0.5)
      stop = true
    end, 15)
    silent:close()
  end)

  it("a request given up while its name is looked up sends nothing", function()
    local silent = assert(core.socket.open("udp", "127.0.0.1", 0))
    helper.run(function()
      local ua = track(sip.ua{ dns = { servers = { silent:address() }, timeout = 1 } })
      local res, err = ua:request("OPTIONS", "sip:bob@slow.test", { timeout = 0.2 })
      assert.is_nil(res)
      assert.equal("timeout", err)
      local i = sip.first(function() return ua:invite("sip:bob@slow.test") end,
                          function() return sip.sleep(0.2) end)
      assert.equal(2, i)
      -- the lookups end (timeout) and their transactions with them
      sip.sleep(1.2)
      assert.equal(0, ua:stats().transactions)
    end, 10)
    silent:close()
  end)
end)

describe("sip.resolve and the dns option", function()
  after_each(close_all)

  it("gives a numeric host without a lookup", function()
    helper.run(function()
      assert.same({ { transport = "tcp", addr = "::1", port = 5070, priority = 0, weight = 0 } },
                  sip.resolve("sip:[::1]:5070;transport=tcp"))
      assert.same({ { transport = "tls", addr = "192.0.2.1", port = 5061, priority = 0, weight = 0 } },
                  sip.resolve("sips:192.0.2.1"))
    end)
  end)

  it("takes a name the hosts file knows from it, without DNS (localhost)", function()
    local silent = assert(core.socket.open("udp", "127.0.0.1", 0))   -- never answers
    helper.run(function()
      local ua = track(sip.ua{ dns = { servers = { silent:address() }, timeout = 1 } })
      local list = assert(sip.resolve("sip:localhost", { ua = ua }))
      assert.same({ transport = "udp", addr = "127.0.0.1", port = 5060, priority = 0, weight = 0 }, list[1])
      list = assert(sip.resolve("sips:localhost:5071", { ua = ua }))
      assert.same({ "tls", "127.0.0.1", 5071 }, { list[1].transport, list[1].addr, list[1].port })
      local peer = track(sip.ua{})
      local res = assert(ua:request("OPTIONS", "sip:x@localhost:" .. port_of(peer)))
      assert.equal(200, res.status)
    end)
    assert.is_nil(silent:recv(), "no query reached the DNS server")
    silent:close()
  end)

  it("takes localhost and names under it as the loopback even where the hosts file has not them (RFC 6761)", function()
    local silent = assert(core.socket.open("udp", "127.0.0.1", 0))   -- never answers
    helper.run(function()
      local ua = track(sip.ua{ dns = { servers = { silent:address() }, timeout = 1 } })
      local list = assert(sip.resolve("sip:pbx.localhost:5080;transport=tcp", { ua = ua }))
      assert.same({ { transport = "tcp", addr = "127.0.0.1", port = 5080, priority = 0, weight = 0 },
                    { transport = "tcp", addr = "::1", port = 5080, priority = 0, weight = 0 } }, list)
      local peer = track(sip.ua{})
      local res = assert(ua:request("OPTIONS", "sip:x@a.b.LOCALHOST.:" .. port_of(peer)))
      assert.equal(200, res.status)
    end)
    assert.is_nil(silent:recv(), "no query reached the DNS server")
    silent:close()
  end)

  it("checks its arguments and the dns option", function()
    helper.raises("bad argument #1 to 'sip.resolve' %(SIP URI string expected",
                  sip.resolve, 5)
    helper.run(function()
      helper.raises("bad argument #1 to 'sip.resolve' %(bad URI", sip.resolve, "nonsense")
      helper.raises("bad argument #2 to 'sip.resolve' %(unknown option 'sever'", sip.resolve,
                    "sip:x.test", { sever = {} })
    end)
    helper.raises("bad argument #1 to 'sip.ua' %(option 'dns.servers%[1%]' must be an address",
                  sip.ua, { dns = { servers = { "dns.example.com" } } })
    helper.raises("bad argument #1 to 'sip.ua' %(unknown option 'server'",
                  sip.ua, { dns = { server = "127.0.0.1" } })
    helper.raises("bad argument #1 to 'sip.ua' %(option 'timeout' must be a number",
                  sip.ua, { dns = { timeout = "2" } })
    helper.raises("dns.timeout' must be positive", sip.ua, { dns = { timeout = 0 } })
    track(sip.ua{ dns = { servers = { "127.0.0.1:5353", "[::1]:53", "127.0.0.2" }, timeout = 2,
                          blacklist = 0 } })
  end)
end)
