--- Subscriptions (RFC 6665) both ways: luasip to luasip, SIPp as the
-- notifier (its first NOTIFY before the 200, a refresh, broken NOTIFYs,
-- terminated) and SIPp as the subscriber (refresh, un-SUBSCRIBE); expiry,
-- refusals, limits and the mistakes that must raise.
local sip = require "sip"
local helper = require "helper"

describe("subscriptions", function()
  local ua = helper.uas(after_each)
  after_each(function() helper.stop_all() end)

  -- a notifier whose handler runs serve(sub); got collects what it saw
  local function notifier(serve, opts)
    local n = ua(opts)
    n:on("SUBSCRIBE", serve)
    return n
  end

  it("subscribes, gets each NOTIFY, refreshes, and unsubscribes", function()
    local got = {}
    local n = notifier(function(sub)
      got.event, got.asked = sub.event, sub.expires
      assert(sub:accept{ expires = 4, body = "open", content_type = "text/plain" })
      sip.sleep(0.2)
      assert(sub:notify{ body = "busy" })
      got.reason = sub:wait()                 -- no timeout: the un-SUBSCRIBE ends it
      got.refreshes = sub.refreshes
    end)
    local bodies, states = {}, {}
    helper.run(function()
      local sub = assert(ua():subscribe(n:uri("bob"), { event = "presence", expires = 10,
                                                        accept = "text/plain" }))
      assert.are.equal("active", sub.state)
      assert.are.equal(4, sub.expires)        -- the notifier granted less
      for note in sub:notifies(5) do
        bodies[#bodies + 1] = note.body
        states[#states + 1] = note.state
        if note.body == "busy" then break end
      end
      sip.sleep(3)                            -- past the refresh, at 2 s
      assert.are.equal(1, sub.refreshes)
      assert.is_true(sub:unsubscribe())
      assert.are.equal("terminated", sub.state)
      assert.are.equal("timeout", sub.reason)
      assert.is_true(sub:unsubscribe())       -- idempotent
    end, 30)
    assert.are.same({ "open", "busy" }, bodies)
    assert.are.same({ "active", "active" }, states)
    helper.run(function() sip.sleep(0.2) end)
    assert.are.equal("presence", got.event)
    assert.are.equal(10, got.asked)
    assert.are.equal("timeout", got.reason)
    assert.are.equal(1, got.refreshes)
  end)

  it("hears the notifier end it, with the reason and retry-after", function()
    local n = notifier(function(sub)
      assert(sub:accept{ body = "x" })
      sip.sleep(0.2)
      assert(sub:terminate{ reason = "deactivated", retry_after = 5 })
    end)
    helper.run(function()
      local seen = {}
      local sub = assert(ua():subscribe(n:uri("bob"), {
        event = "presence",
        on_notify = function(_, note) seen[#seen + 1] = note end,
      }))
      assert.are.equal("deactivated", sub:wait())   -- no timeout
      assert.are.equal(2, #seen)
      assert.are.equal("terminated", seen[2].state)
      assert.are.equal("deactivated", seen[2].reason)
      assert.are.equal(5, seen[2].retry_after)
    end, 20)
  end)

  it("expires on the notifier when the subscriber stops refreshing", function()
    local got = {}
    local n = notifier(function(sub)
      assert(sub:accept{ expires = 1 })
      got.reason = sub:wait(20)
    end)
    local s = ua()
    helper.run(function()
      assert(s:subscribe(n:uri("bob"), { event = "dialog", expires = 1 }))
      s:close()                               -- no refresh, no un-SUBSCRIBE
      sip.sleep(3)
    end, 30)
    assert.are.equal("timeout", got.reason)
  end)

  it("a sub:notifies loop with a timeout ends after it, and the UA's close ends the rest", function()
    local n = notifier(function(sub) assert(sub:accept{}) end)
    helper.run(function()
      local s = ua()
      local sub = assert(s:subscribe(n:uri("bob"), { event = "presence" }))
      local count = 0
      for _ in sub:notifies(0.5) do count = count + 1 end
      assert.are.equal(1, count)              -- the first NOTIFY, then 0.5 s of nothing
      local waited = {}
      sip.spawn(function() waited.reason = sub:wait() end)
      s:close()
      sip.sleep(0.1)
      assert.are.equal("closed", waited.reason)
      assert.are.equal("closed", sub:wait(1)) -- over: returns at once
    end, 20)
  end)

  it("returns the refusal: a handler's 489, and one that neither accepts nor refuses", function()
    local n = notifier(function(sub)
      if sub.event ~= "presence" then return 489 end
    end)
    helper.run(function()
      local sub, err, res = ua():subscribe(n:uri("bob"), { event = "message-summary" })
      assert.is_nil(sub)
      assert.are.equal("489 Bad Event", err)
      assert.are.equal("message-summary", res:header("Allow-Events"))
      sub, err = ua():subscribe(n:uri("bob"), { event = "presence" })
      assert.is_nil(sub)
      assert.are.equal("403 Forbidden", err)
    end, 20)
  end)

  it("fails when the 2xx comes without a NOTIFY", function()
    local plain = ua()
    plain:on("*", function() return 200 end)  -- no subscription usage: a bare 200
    helper.run(function()
      local sub, err = ua():subscribe(plain:uri("bob"), { event = "presence", timeout = 1 })
      assert.is_nil(sub)
      assert.are.equal("timeout", err)
    end, 20)
  end)

  it("answers bad input: no Event 400, unknown NOTIFY 481, past the limit 503", function()
    local n = notifier(function(sub) assert(sub:accept{}); sub:wait(30) end, {
      listen = "udp:127.0.0.1:0", max_subscriptions = 2 })
    helper.run(function()
      local c = ua()
      local res = assert(c:request("SUBSCRIBE", n:uri("bob")))
      assert.are.equal(400, res.status)
      assert.matches("Event", res.reason)
      -- a NOTIFY for a dialog nobody has: 481 from the core ...
      res = assert(c:request("NOTIFY", n:uri("bob"), {
        to = "<sip:x@127.0.0.1>;tag=nope", headers = { Event = "presence",
        ["Subscription-State"] = "active" } }))
      assert.are.equal(481, res.status)
      -- ... and while a subscription of ours waits for its first one
      local waiting = ua()
      waiting:on("*", function() sip.sleep(1); return 500 end)
      sip.spawn(function() c:subscribe(waiting:uri("w"), { event = "presence", timeout = 2 }) end)
      res = assert(c:request("NOTIFY", n:uri("bob"), {
        to = "<sip:x@127.0.0.1>;tag=nope", headers = { Event = "presence",
        ["Subscription-State"] = "active" } }))
      assert.are.equal(481, res.status)
      assert(ua():subscribe(n:uri("a"), { event = "presence" }))
      assert(ua():subscribe(n:uri("b"), { event = "presence" }))
      local sub, err = ua():subscribe(n:uri("c"), { event = "presence" })
      assert.is_nil(sub)
      assert.are.equal("503 Service Unavailable", err)
    end, 20)
  end)

  it("raises on a wrong argument, naming the function and the option", function()
    local c = ua()
    helper.run(function()
      helper.raises("ua:subscribe.*event", function() c:subscribe("sip:x@127.0.0.1", {}) end)
      helper.raises("ua:subscribe.*bogus", function()
        c:subscribe("sip:x@127.0.0.1", { event = "presence", bogus = 1 })
      end)
      helper.raises("ua:subscribe.*event", function()
        c:subscribe("sip:x@127.0.0.1", { event = "pres\r\nX: y" })
      end)
      helper.raises("ua:subscribe.*URI", function() c:subscribe(42, { event = "presence" }) end)
    end)
  end)

  it("talks to SIPp as the notifier: NOTIFY before the 200, refresh, broken NOTIFYs", function()
    local port = helper.free_port()
    local sipp = helper.sipp{ sf = "uas_notifier.xml", port = port, args = { "-m", "1" } }
    local bodies = {}
    helper.run(function()
      local sub = assert(ua():subscribe("sip:bob@127.0.0.1:" .. port,
                                        { event = "presence", expires = 4 }))
      assert.are.equal("active", sub.state)
      for note in sub:notifies(15) do bodies[#bodies + 1] = note.state .. ":" .. note.body:gsub("%s", "") end
      assert.are.equal(1, sub.refreshes)
      assert.are.equal("noresource", sub.reason)
    end, 40)
    -- the 400 and the 489 were answers to the broken ones, not NOTIFYs
    assert.are.same({ "active:open", "active:busy", "terminated:" }, bodies)
    assert.are.equal(0, sipp:wait(15), sipp.log())
  end)

  it("keeps a forked NOTIFY as a subscription of its own with on_fork, else 481s it", function()
    for _, keep in ipairs{ true, false } do
      local port = helper.free_port()
      local sipp = helper.sipp{ sf = "uas_notifier_forked.xml", port = port, args = { "-m", "1" } }
      local forks = {}
      helper.run(function()
        local sub = assert(ua():subscribe("sip:bob@127.0.0.1:" .. port, {
          event = "presence", on_fork = keep and function(s, fork)
            assert.are.equal(s, fork.fork_of)
            forks[#forks + 1] = fork
          end or nil }))
        local bodies = {}
        for n in sub:notifies(10) do bodies[#bodies + 1] = n.body:gsub("%s", "") end
        assert.are.same({ "A", "" }, bodies)
        if keep then
          assert.are.equal(1, #forks)
          bodies = {}
          for n in forks[1]:notifies(10) do bodies[#bodies + 1] = n.state .. n.body:gsub("%s", "") end
          assert.are.same({ "activeB", "terminated" }, bodies)
        end
      end, 30)
      assert.are.equal(keep and 1 or 0, #forks)
      assert.are.equal(0, sipp:wait(15), sipp.log())
    end
  end)

  it("serves SIPp as the subscriber: refresh, then un-SUBSCRIBE", function()
    local got = {}
    local n = notifier(function(sub)
      got.event = sub.event
      assert(sub:accept{ body = "open" })
      got.reason = sub:wait(30)
      got.refreshes = sub.refreshes
    end)
    local sipp = helper.sipp{ sf = "uac_subscriber.xml", port = helper.free_port(),
                              args = { "-m", "1", "-s", "bob" }, remote = n:address():match(":(.*)$") }
    assert.are.equal(0, sipp:wait(30), sipp.log())
    helper.run(function() sip.sleep(0.2) end)
    assert.are.same({ event = "presence", reason = "timeout", refreshes = 1 }, got)
  end)
end)
