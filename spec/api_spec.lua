--- The public contract of the Lua API (DESIGN.md "Lua API", "Errors",
-- "Coroutine protocol"): what raises, what fails with nil, err, what the
-- core answers by itself, and how coroutines are scheduled.
local sip = require "sip"
local helper = require "helper"

local function hostport(ua)
  return (ua:address():match("^%a+:(.*)$"))
end

local raises = helper.raises

-- What a test opened, undone after it (pass or fail). busted keeps one
-- finally per test, so the pieces below register here instead.
local cleanups = {}
after_each(function()
  for i = #cleanups, 1, -1 do cleanups[i]() end
  cleanups = {}
end)

-- Collect the library's log lines instead of printing them.
local function capture_log()
  local lines = {}
  sip.log("error", function(level, msg) lines[#lines + 1] = level .. ": " .. msg end)
  cleanups[#cleanups + 1] = function() sip.log("error", false) end
  return lines
end

local function ua(opts)
  local u = assert(sip.ua(opts or { listen = "udp:127.0.0.1:0" }))
  cleanups[#cleanups + 1] = function() u:close() end
  return u
end

describe("blocking calls", function()
  it("raise an error naming sip.run outside a luasip coroutine", function()
    local client = ua()
    raises("sip%.run", client.request, client, "OPTIONS", "sip:127.0.0.1:9")
    raises("sip%.run", sip.sleep, 0.01)
    -- a coroutine of the user's own is not one luasip drives either
    local co = coroutine.create(function() return sip.sleep(0.01) end)
    local ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("sip%.run", err)
    co = coroutine.create(function() return client:request("OPTIONS", "sip:127.0.0.1:9") end)
    ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("sip%.run", err)
    -- nothing was sent
    assert.are.equal(0, client:stats().client_transactions)
  end)
end)

describe("programmer's mistakes raise", function()
  it("sip.ua with an unknown option names it", function()
    raises("bogus", sip.ua, { bogus = 1 })
    raises("listne", sip.ua, { listne = "udp:127.0.0.1:0" })
    raises("table expected", sip.ua, "udp:127.0.0.1:0")
  end)

  it("sip.ua with bad timer values", function()
    raises("t1", sip.ua, { t1 = 0 })
    raises("t1", sip.ua, { t1 = "fast" })
  end)

  it("ua:request with a bad URI, method or options", function()
    local client = ua()
    helper.run(function()
      raises("URI", client.request, client, "OPTIONS", "not a uri")
      raises("URI", client.request, client, "OPTIONS", "sip:")
      raises("URI", client.request, client, "OPTIONS", "sip:bob@127.0.0.1\r\nX: y")
      raises("URI", client.request, client, "OPTIONS", 42)
      raises("method", client.request, client, "BAD METHOD", "sip:127.0.0.1")
      raises("ua:invite", client.request, client, "INVITE", "sip:127.0.0.1")
      raises("table expected", client.request, client, "OPTIONS", "sip:127.0.0.1", "opts")
      raises("body", client.request, client, "MESSAGE", "sip:127.0.0.1", { body = 42 })
      raises("timeout", client.request, client, "OPTIONS", "sip:127.0.0.1", { timeout = "x" })
    end, 5)
    assert.are.equal(0, client:stats().client_transactions)
    assert.are.equal(0, client:stats().pending_requests)
  end)

  it("ua:on with a bad method or handler", function()
    local server = ua()
    raises("method", server.on, server, "NOT A METHOD", function() end)
    raises("function expected", server.on, server, "OPTIONS", 200)
  end)
end)

describe("handlers", function()
  it("a handler that raises: the client gets 500, the error is logged, the UA keeps serving",
     function()
    local logs = capture_log()
    local server, client = ua(), ua()
    local n = 0
    server:on("MESSAGE", function(req)
      n = n + 1
      if req.body == "fail" then error("handler exploded") end
      return 200
    end)
    helper.run(function()
      local uri = "sip:" .. hostport(server)
      local res, err = client:request("MESSAGE", uri, { body = "fail", timeout = 5 })
      assert.is_nil(err)
      assert.are.equal(500, res.status)
      res, err = client:request("MESSAGE", uri, { body = "ok", timeout = 5 })
      assert.is_nil(err)
      assert.are.equal(200, res.status)
    end, 10)
    assert.are.equal(2, n)
    local all = table.concat(logs, "\n")
    assert.matches("handler exploded", all)
    assert.matches("traceback", all)
  end)

  it("a handler that raises after answering sends nothing more", function()
    capture_log()
    local server, client = ua(), ua()
    server:on("MESSAGE", function(req)
      req:reply(202)
      error("late failure")
    end)
    helper.run(function()
      local res = assert(client:request("MESSAGE", "sip:" .. hostport(server),
                                        { body = "x", timeout = 5 }))
      assert.are.equal(202, res.status)
    end, 10)
  end)

  it("a handler returning 486 gives the client a 486 response, not a failure", function()
    local server, client = ua(), ua()
    server:on("MESSAGE", function() return 486, "Busy Here", { headers = { ["X-Why"] = "busy" } } end)
    helper.run(function()
      local res, err = client:request("MESSAGE", "sip:" .. hostport(server), { body = "x", timeout = 5 })
      assert.is_nil(err)
      assert.truthy(res)
      assert.are.equal(486, res.status)
      assert.are.equal("Busy Here", res.reason)
      assert.are.equal("busy", res:header("X-Why"))
    end, 10)
  end)

  it("a '*' handler serves any method without one of its own", function()
    local server, client = ua(), ua()
    server:on("*", function(req) return 200, "OK", { headers = { ["X-Method"] = req.method } } end)
    server:on("OPTIONS", function() return 202 end)
    helper.run(function()
      local uri = "sip:" .. hostport(server)
      local res = assert(client:request("INFO", uri, { timeout = 5 }))
      assert.are.equal(200, res.status)
      assert.are.equal("INFO", res:header("X-Method"))
      res = assert(client:request("OPTIONS", uri, { timeout = 5 }))
      assert.are.equal(202, res.status)
    end, 10)
  end)
end)

describe("requests no handler serves", function()
  for _, case in ipairs{ { "a UA serving nothing", nil }, { "a UA serving MESSAGE", "MESSAGE" } } do
    it("get 405 with Allow, 501 for an unknown method, 200 with Allow to OPTIONS (" ..
       case[1] .. ")", function()
      local server, client = ua(), ua()
      if case[2] then server:on(case[2], function() return 200 end) end
      helper.run(function()
        local uri = "sip:" .. hostport(server)
        local res, err = client:request("SUBSCRIBE", uri, { timeout = 5 })
        assert.is_nil(err)
        assert.are.equal(405, res.status)
        local allow = res:header("Allow")
        assert.truthy(allow, "405 without Allow")
        assert.matches("OPTIONS", allow)
        if case[2] then assert.matches(case[2], allow) end
        assert.is_nil(allow:find("SUBSCRIBE", 1, true))

        res, err = client:request("FOO", uri, { timeout = 5 })
        assert.is_nil(err)
        assert.are.equal(501, res.status)

        res, err = client:request("OPTIONS", uri, { timeout = 5 })
        assert.is_nil(err)
        assert.are.equal(200, res.status)
        allow = res:header("Allow")
        assert.truthy(allow, "200 to OPTIONS without Allow")
        assert.matches("OPTIONS", allow)
        if case[2] then assert.matches(case[2], allow) end
      end, 10)
    end)
  end
end)

describe("network outcomes fail with nil, err", function()
  it("a closed UDP port fails fast with a transport error", function()
    local client = ua()
    local port = helper.free_port()   -- nothing listens there
    helper.run(function()
      local t0 = sip.now()
      local res, err = client:request("OPTIONS", "sip:127.0.0.1:" .. port, { timeout = 5 })
      local elapsed = sip.now() - t0
      assert.is_nil(res)
      assert.is_string(err)
      assert.matches("^transport:", err)
      assert.is_true(elapsed < 0.5, "took " .. elapsed .. " s")
    end, 10)
  end)

  it("a closed TCP port fails fast with a transport error", function()
    local client = ua{ listen = "tcp:127.0.0.1:0" }
    local port = helper.free_port()
    helper.run(function()
      local t0 = sip.now()
      local res, err = client:request("OPTIONS", "sip:127.0.0.1:" .. port .. ";transport=tcp",
                                      { timeout = 5 })
      local elapsed = sip.now() - t0
      assert.is_nil(res)
      assert.matches("^transport:", err)
      assert.is_true(elapsed < 0.5, "took " .. elapsed .. " s")
    end, 10)
  end)

  it("the timeout option ends the wait with nil, 'timeout'", function()
    local server, client = ua(), ua()
    local held = {}
    server:on("OPTIONS", function(req) held[#held + 1] = req end)
    helper.run(function()
      local t0 = sip.now()
      local res, err = client:request("OPTIONS", "sip:" .. hostport(server), { timeout = 0.3 })
      local elapsed = sip.now() - t0
      assert.is_nil(res)
      assert.are.equal("timeout", err)
      assert.is_near(0.3, elapsed, 0.1)
    end, 10)
    assert.are.equal(1, #held)
    assert.are.equal(0, client:stats().pending_requests)
  end)

  it("ua:close() wakes every pending request with nil, 'closed'", function()
    local server = ua()
    local held = {}
    server:on("OPTIONS", function(req) held[#held + 1] = req end)
    local client = ua()
    local outcomes = {}
    helper.run(function()
      for i = 1, 3 do
        sip.spawn(function()
          outcomes[i] = table.pack(client:request("OPTIONS", "sip:" .. hostport(server),
                                                  { timeout = 5 }))
        end)
      end
      sip.sleep(0.1)
      assert.are.equal(3, client:stats().pending_requests)
      local t0 = sip.now()
      client:close()
      while #outcomes < 3 and sip.now() - t0 < 1 do sip.sleep(0.01) end
      assert.is_true(sip.now() - t0 < 0.5)
    end, 5)
    for i = 1, 3 do
      assert.are.same({ nil, "closed", n = 2 }, outcomes[i])
    end
    assert.matches("closed", tostring(client))
    helper.run(function()
      raises("closed", client.request, client, "OPTIONS", "sip:127.0.0.1")
    end, 5)
  end)

  it("ua:close() called while the loop is not running (main's first slice) wakes pending requests", function()
    local server = ua()
    local held = {}
    server:on("OPTIONS", function(req) held[#held + 1] = req end)
    local client = ua()
    local outcome
    helper.run(function()
      sip.spawn(function()
        outcome = table.pack(client:request("OPTIONS", "sip:" .. hostport(server), { timeout = 2 }))
      end)
      -- no wait in between: main's first slice runs outside core.run/step
      client:close()
      local t0 = sip.now()
      while not outcome and sip.now() - t0 < 3 do sip.sleep(0.02) end
    end, 5)
    assert.are.same({ nil, "closed", n = 2 }, outcome)
  end)
end)

describe("scheduling", function()
  it("sip.spawn runs a coroutine at once until its first wait; sleeps end in order", function()
    local order = {}
    helper.run(function()
      sip.spawn(function(tag)
        order[#order + 1] = tag .. " start"
        sip.sleep(0.2)
        order[#order + 1] = tag .. " end"
      end, "slow")
      sip.spawn(function(tag)
        order[#order + 1] = tag .. " start"
        sip.sleep(0.1)
        order[#order + 1] = tag .. " end"
      end, "fast")
      sip.spawn(function() order[#order + 1] = "no wait" end)
      order[#order + 1] = "main"
      sip.sleep(0)
      order[#order + 1] = "main after sleep(0)"
      sip.sleep(0.3)
      order[#order + 1] = "main end"
    end, 5)
    assert.are.same({ "slow start", "fast start", "no wait", "main", "main after sleep(0)",
                      "fast end", "slow end", "main end" }, order)
  end)

  it("sip.sleep waits about as long as asked and returns true", function()
    helper.run(function()
      local t0 = sip.now()
      assert.is_true(sip.sleep(0.15))
      assert.is_near(0.15, sip.now() - t0, 0.05)
      raises("sleep", sip.sleep, -1)
      raises("sleep", sip.sleep, "1")
    end, 5)
  end)

  it("sip.spawn returns the coroutine and rejects a non-function", function()
    helper.run(function()
      local co = sip.spawn(function() sip.sleep(0.01) end)
      assert.are.equal("thread", type(co))
      assert.are.equal("suspended", coroutine.status(co))
      raises("function expected", sip.spawn, 42)
    end, 5)
  end)

  it("sip.run(main) returns true once main is done and nothing is left to wait for", function()
    local done = false
    assert.is_true(sip.run(function()
      sip.spawn(function() sip.sleep(0.05); done = true end)
    end))
    assert.is_true(done)
  end)

  it("sip.run(main) re-raises main's error with its traceback", function()
    local err = raises("boom from main", sip.run, function()
      sip.sleep(0.01)
      error("boom from main")
    end)
    assert.matches("traceback", err)
    -- and the next sip.run works
    local ran = false
    assert.is_true(sip.run(function() sip.sleep(0.01); ran = true end))
    assert.is_true(ran)
  end)

  it("sip.run(main) re-raises an error raised before main's first wait", function()
    raises("early boom", sip.run, function() error("early boom") end)
  end)

  it("sip.stop() ends sip.run while a UA still serves", function()
    local server = ua()
    server:on("OPTIONS", function() return 200 end)
    local t0 = sip.now()
    assert.is_true(sip.run(function()
      sip.sleep(0.05)
      sip.stop()
    end))
    assert.is_true(sip.now() - t0 < 1)
  end)

  it("200 concurrent requests from 200 coroutines all complete with 200", function()
    local server = ua{ listen = "udp:127.0.0.1:0" }
    local client = ua{ listen = "udp:127.0.0.1:0" }
    local served = 0
    server:on("OPTIONS", function() served = served + 1; return 200 end)
    local results = {}
    local finished = 0
    helper.run(function()
      local uri = "sip:" .. hostport(server)
      for i = 1, 200 do
        sip.spawn(function()
          local res, err = client:request("OPTIONS", uri, { timeout = 10 })
          results[i] = res and res.status or err
          finished = finished + 1
        end)
      end
      local t0 = sip.now()
      while finished < 200 and sip.now() - t0 < 15 do sip.sleep(0.02) end
    end, 20)
    assert.are.equal(200, finished)
    for i = 1, 200 do assert.are.equal(200, results[i], "request " .. i) end
    assert.are.equal(200, served)
  end)
end)

describe("sip.trace", function()
  after_each(function() sip.trace(false) end)

  it("sees a request sent while the loop is not running (main's first slice)", function()
    local server, client = ua(), ua()
    server:on("OPTIONS", function() return 200 end)
    local seen = {}
    sip.trace(function(dir, proto, peer, text)
      seen[#seen + 1] = { dir = dir, proto = proto, peer = peer, first = text:match("^[^\r\n]*") }
    end)
    sip.test.run(function()
      -- the first thing main does: its first slice runs outside core.run/step
      assert(client:request("OPTIONS", "sip:" .. hostport(server), { timeout = 5 }))
    end, 5)
    sip.trace(false)
    local function find(dir, peer, pat)
      for _, s in ipairs(seen) do
        if s.dir == dir and s.peer == peer and s.first:match(pat) then return s end
      end
    end
    -- the client's request, the server's view of it, and the response both ways
    local out_req = find("out", hostport(server), "^OPTIONS ")
    assert.truthy(out_req, "the request sent was not traced")
    assert.are.equal("udp", out_req.proto:lower())
    assert.truthy(find("in", hostport(client), "^OPTIONS "))
    assert.truthy(find("out", hostport(client), "^SIP/2%.0 200"))
    assert.truthy(find("in", hostport(server), "^SIP/2%.0 200"))
  end)
end)

describe("sip.log", function()
  it("a function gets the core's log lines, and keeps them after a level-only call", function()
    local lines = {}
    sip.log("info", function(level, msg) lines[#lines + 1] = level .. ": " .. msg end)
    cleanups[#cleanups + 1] = function() sip.log("error", false) end
    local server = ua{ listen = "udp:127.0.0.1:0", max_udp = 600 }
    local client = ua()
    server:on("MESSAGE", function() return 200 end)
    local function send_too_big()
      helper.run(function()
        local res, err = client:request("MESSAGE", "sip:" .. hostport(server),
                                        { body = string.rep("x", 1000), timeout = 0.2 })
        assert.is_nil(res)
        assert.are.equal("timeout", err)
      end, 5)
    end
    send_too_big()
    assert.matches("info: dropped message from [%d.:]+: datagram larger than max_udp",
                   table.concat(lines, "\n"))
    -- changing only the level keeps the function
    lines = {}
    assert.are.equal("info", sip.log("info"))
    send_too_big()
    assert.matches("dropped message", table.concat(lines, "\n"))
  end)
end)

describe("timeouts after a script ran without waiting", function()
  -- the loop's clock stands still while Lua runs: a timeout armed after
  -- a second of blocking work used to count from the loop's last wake,
  -- and expired at once (a TLS request timed out before its handshake)
  local function block(seconds)
    os.execute("sleep " .. seconds)
  end

  it("count from the call: ua:request, ua:invite and sip.sleep", function()
    local server = ua()
    server:on("OPTIONS", function() sip.sleep(0.3); return 200 end)
    server:on("INVITE", function(call) sip.sleep(0.3); call:answer() end)
    local client = ua()
    local got = {}
    helper.run(function()
      block(1.5)
      local res, err = client:request("OPTIONS", server:uri(), { timeout = 1 })
      got.request = res and res.status or err
      block(1.5)
      local call
      call, err = client:invite(server:uri(), { timeout = 1, sdp = sip.sdp.offer{ addr = "127.0.0.1", port = 4030 } })
      got.invite = call and "answered" or err
      if call then call:hangup() end
      block(1.5)
      local t0 = sip.now()
      sip.sleep(0.5)
      got.slept = sip.now() - t0
    end, 20)
    assert.are.equal(200, got.request)
    assert.are.equal("answered", got.invite)
    assert.is_true(got.slept >= 0.49, "slept " .. got.slept)
  end)
end)
