--- The transaction layer as a peer sees it: Timer E retransmissions and
-- Timer F over UDP, a single send over TCP, the server transaction that
-- absorbs a retransmitted request and replays its response (checked with
-- SIPp), and transactions that go away after Timers J and K.
-- T1 is scaled down (0.05 s) so 64*T1 is 3.2 s.
local sip = require "sip"
local helper = require "helper"

local T1, T2 = 0.05, 0.4

local function hostport(ua)
  return (ua:address():match("^%a+:(.*)$"))
end

-- A UA that receives `method` and never answers: it keeps every request
-- so that none is collected (which would answer it with a 500).
local function silent_server(listen)
  local ua = assert(sip.ua{ listen = listen, t1 = T1, t2 = T2 })
  local held = {}
  ua:on("OPTIONS", function(req) held[#held + 1] = req end)
  return ua, held
end

-- Records the time of every message `ua` sends towards `peer`
-- ("127.0.0.1:port") whose first line starts with `first`.
local function record_sends(peer, first)
  local times = {}
  sip.trace(function(dir, _, to, text)
    if dir == "out" and to == peer and text:sub(1, #first) == first then
      times[#times + 1] = sip.now()
    end
  end)
  return times
end

describe("client transactions (RFC 3261 17.1.2)", function()
  after_each(function() sip.trace(false) end)

  it("over UDP retransmit at 0, T1, 3T1, 7T1, then every T2, and fail with timeout at 64*T1",
     function()
    local server, held = silent_server("udp:127.0.0.1:0")
    local client = assert(sip.ua{ listen = "udp:127.0.0.1:0", t1 = T1, t2 = T2 })
    finally(function() client:close(); server:close() end)
    local times = record_sends(hostport(server), "OPTIONS ")
    local res, err, elapsed, t0
    helper.run(function()
      -- wait once first: a message sent in main's first slice, outside
      -- core.run/step, is not traced (pinned by "sip.trace sees a request
      -- sent while the loop is not running" in api_spec.lua), and this
      -- test is about the schedule
      sip.sleep(0.01)
      t0 = sip.now()
      res, err = client:request("OPTIONS", server:uri())
      elapsed = sip.now() - t0
    end, 10)
    assert.is_nil(res)
    assert.are.equal("timeout", err)
    assert.is_near(64 * T1, elapsed, 0.25)

    -- Timer E: intervals T1, 2T1, 4T1, then capped at T2 (= 8T1 here)
    local expected = { 0 }
    local gap, at = T1, 0
    while true do
      at = at + gap
      if at >= 64 * T1 - 1e-9 then break end
      expected[#expected + 1] = at
      gap = math.min(2 * gap, T2)
    end
    assert.are.equal(11, #expected)  -- 0 1 3 7 15 23 31 39 47 55 63 (in T1)
    assert.are.equal(#expected, #times,
      "sends at " .. table.concat((function()
        local r = {}
        for i, t in ipairs(times) do r[i] = string.format("%.3f", t - times[1]) end
        return r
      end)(), " "))
    for i = 1, #expected do
      assert.is_near(expected[i], times[i] - times[1], 0.03 + 0.005 * i,
                     "send #" .. i .. " at the wrong time")
    end
    assert.is_near(0, times[1] - t0, 0.02)
    -- the silent server saw one request: the retransmissions were absorbed
    assert.are.equal(1, #held)
    assert.are.equal(10, client:stats().retransmissions)
    assert.are.equal(0, client:stats().transactions)
    assert.are.equal(0, client:stats().pending_requests)
  end)

  it("over TCP send once, and fail with timeout at 64*T1", function()
    local server, held = silent_server("tcp:127.0.0.1:0")
    local client = assert(sip.ua{ listen = "tcp:127.0.0.1:0", t1 = T1, t2 = T2 })
    finally(function() client:close(); server:close() end)
    local times = record_sends(hostport(server), "OPTIONS ")
    local res, err, elapsed
    helper.run(function()
      sip.sleep(0.01)
      local t0 = sip.now()
      res, err = client:request("OPTIONS", server:uri())
      elapsed = sip.now() - t0
    end, 10)
    assert.is_nil(res)
    assert.are.equal("timeout", err)
    assert.is_near(64 * T1, elapsed, 0.25)
    assert.are.equal(1, #times)
    assert.are.equal(1, #held)
    assert.are.equal(0, client:stats().retransmissions)
  end)

  it("stop retransmitting once the final response arrives", function()
    local server = assert(sip.ua{ listen = "udp:127.0.0.1:0", t1 = T1, t2 = T2 })
    local client = assert(sip.ua{ listen = "udp:127.0.0.1:0", t1 = T1, t2 = T2 })
    finally(function() client:close(); server:close() end)
    -- answer after 3.5 T1: the request went out at 0, T1, 3T1
    server:on("OPTIONS", function() sip.sleep(3.5 * T1); return 200 end)
    local times = record_sends(hostport(server), "OPTIONS ")
    helper.run(function()
      sip.sleep(0.01)
      local res = assert(client:request("OPTIONS", server:uri(), { timeout = 5 }))
      assert.are.equal(200, res.status)
      sip.sleep(20 * T1)
    end, 10)
    assert.are.equal(3, #times)
  end)
end)

describe("server transactions (RFC 3261 17.2.2)", function()
  it("absorb a retransmitted request and replay the response (SIPp UAC)", function()
    local port = helper.free_port()
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:" .. port, t1 = T1, t2 = T2 })
    local calls = 0
    ua:on("OPTIONS", function()
      calls = calls + 1
      return 200, "OK", { headers = { ["X-Count"] = tostring(calls) } }
    end)
    finally(function() helper.stop_all(); ua:close() end)
    -- -nr: else SIPp takes the replayed 200 (byte for byte the first one)
    -- for a retransmission and never matches its second <recv>
    local sipp = helper.sipp{ sf = "nist_retrans_uac.xml", port = helper.free_port(),
      transport = "u1", remote = "127.0.0.1:" .. port,
      args = { "-m", 1, "-nr", "-timeout", "10", "-timeout_error" } }
    local rc = sipp:wait(15)
    assert.are.equal(0, rc, sipp.log())
    assert.are.equal(1, calls)
    assert.is_true(ua:stats().retransmissions >= 1)
    -- Timer J (64*T1 over UDP) then ends the transaction
    assert.is_true(helper.idle(ua, 64 * T1 + 2))
  end)
end)

describe("transaction lifetimes", function()
  it("over UDP the server keeps its transaction for Timer J, the client for Timer K", function()
    local T4 = 0.5
    local server = assert(sip.ua{ listen = "udp:127.0.0.1:0", t1 = T1, t2 = T2, t4 = T4 })
    local client = assert(sip.ua{ listen = "udp:127.0.0.1:0", t1 = T1, t2 = T2, t4 = T4 })
    finally(function() client:close(); server:close() end)
    server:on("OPTIONS", function() return 200 end)
    local t0
    helper.run(function()
      local res = assert(client:request("OPTIONS", server:uri(), { timeout = 5 }))
      assert.are.equal(200, res.status)
      t0 = sip.now()
    end, 10)
    -- both are still there right after the response
    assert.are.equal(1, client:stats().client_transactions)
    assert.are.equal(1, server:stats().server_transactions)
    -- Timer K = T4 for the client
    assert.is_true(helper.idle(client, 5))
    local k = sip.now() - t0
    assert.is_near(T4, k, 0.2)
    assert.are.equal(1, server:stats().server_transactions)
    -- Timer J = 64*T1 for the server
    assert.is_true(helper.idle(server, 64 * T1 + 2))
    local j = sip.now() - t0
    assert.is_near(64 * T1, j, 0.3)
  end)

  it("over TCP end with the response (Timers J and K are 0)", function()
    local server = assert(sip.ua{ listen = "tcp:127.0.0.1:0", t1 = T1, t2 = T2 })
    local client = assert(sip.ua{ listen = "tcp:127.0.0.1:0", t1 = T1, t2 = T2 })
    finally(function() client:close(); server:close() end)
    server:on("OPTIONS", function() return 200 end)
    helper.run(function()
      local res = assert(client:request("OPTIONS", server:uri(), { timeout = 5 }))
      assert.are.equal(200, res.status)
    end, 10)
    assert.is_true(helper.idle(client, 0.5))
    assert.is_true(helper.idle(server, 0.5))
  end)

  it("a request's handler that never answers: the 500 on collection ends the transaction",
     function()
    local server = assert(sip.ua{ listen = "udp:127.0.0.1:0", t1 = T1, t2 = T2 })
    local client = assert(sip.ua{ listen = "udp:127.0.0.1:0", t1 = T1, t2 = T2 })
    finally(function() client:close(); server:close() end)
    -- the handler ends without answering and without keeping the request
    server:on("OPTIONS", function() end)
    helper.run(function()
      sip.spawn(function()
        for _ = 1, 10 do
          collectgarbage()
          sip.sleep(T1)
        end
      end)
      local res, err = client:request("OPTIONS", server:uri(), { timeout = 3 })
      assert.is_nil(err)
      assert.are.equal(500, res.status)
    end, 10)
    assert.is_true(helper.idle(server, 64 * T1 + 2))
  end)
end)
