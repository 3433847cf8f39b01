--- The examples about subscriptions and transfers, run as a user runs
-- them (bin/luasip, a process of their own, a free port):
-- examples/mwi.lua to a luasip subscriber (the counts, a new message, a
-- message heard, other events and unknown users refused), and
-- examples/transfer.lua between a luasip caller and a luasip target
-- (attended, blind, a caller that refuses) and with SIPp as the caller.
local sip = require "sip"
local core = require "sip.core"
local helper = require "helper"

local ua = helper.uas(after_each)
after_each(helper.stop_all)

-- until proc's log has `text` (plain, not a pattern), or `timeout`
-- seconds; drives the loop, or sleeps in a luasip coroutine
local function logged(proc, text, timeout)
  local deadline = core.now() + (timeout or 30)
  while not proc.log():find(text, 1, true) do
    if core.now() > deadline then return false end
    if coroutine.isyieldable() then sip.sleep(0.1) else helper.spin(0.1) end
  end
  return true
end

-- an example on a free port, once it listens: the process and the port
local function start(script, args, name)
  local port = helper.free_port()
  local argv = { helper.root .. "/bin/luasip", helper.root .. "/examples/" .. script,
                 "udp:127.0.0.1:" .. port }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local proc = helper.spawn(argv, name)
  assert(logged(proc, "listening on", 30), proc.log())
  return proc, port
end

local function touch(path)
  assert(io.open(path, "w")):close()
end

describe("examples/mwi.lua", function()
  local SUMMARY = "application/simple-message-summary"

  it("tells a subscriber its counts, then each change of its mailbox; refuses other events", function()
    local dir = helper.tmp .. "/mwi-" .. math.random(1, 1e9)
    assert(os.execute("mkdir -p '" .. dir .. "/alice/old'"))
    local mwi, port = start("mwi.lua", { "-d", dir, "-i", "0.2" }, "mwi")
    local account = "sip:alice@127.0.0.1:" .. port
    local u = ua()
    helper.run(function()
      local sub = assert(u:subscribe(account, { event = "message-summary", accept = SUMMARY,
                                                expires = 600 }))
      local next_notify = sub:notifies(20)
      -- at once: nothing waiting
      local n = assert(next_notify())
      assert.are.equal("active", n.state)
      assert.are.equal(SUMMARY, n.content_type)
      assert.matches("Messages%-Waiting: no\r\n", n.body)
      assert.matches("Message%-Account: " .. account:gsub("%p", "%%%0") .. "\r\n", n.body)
      assert.matches("Voice%-Message: 0/0\r\n", n.body)
      -- a message is left
      touch(dir .. "/alice/msg1.wav")
      n = assert(next_notify(), "no NOTIFY after a new message: " .. mwi.log())
      assert.matches("Messages%-Waiting: yes\r\n", n.body)
      assert.matches("Voice%-Message: 1/0\r\n", n.body)
      -- and heard
      assert(os.rename(dir .. "/alice/msg1.wav", dir .. "/alice/old/msg1.wav"))
      n = assert(next_notify(), "no NOTIFY after the message was heard: " .. mwi.log())
      assert.matches("Messages%-Waiting: no\r\n", n.body)
      assert.matches("Voice%-Message: 0/1\r\n", n.body)
      -- presence is not served here; bob has no mailbox
      local none, err = u:subscribe(account, { event = "presence" })
      assert.is_nil(none)
      assert.are.equal("489 Bad Event", err)
      none, err = u:subscribe("sip:bob@127.0.0.1:" .. port, { event = "message-summary" })
      assert.is_nil(none)
      assert.are.equal("404 Not Found", err)
      assert.is_true(sub:unsubscribe())
      assert(logged(mwi, "stopped watching " .. account, 10), mwi.log())
    end, 60)
    local log = mwi.log()
    assert.matches("mwi: alice has 1 new, 0 old", log, 1, true)
    assert.matches("mwi: notify " .. account .. " 1/0 to sip:[^\n]*: ok", log)
    assert.matches("mwi: alice has 0 new, 1 old", log, 1, true)
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)

describe("examples/transfer.lua", function()
  -- the target: answers every call, each in got[]
  local function target(got)
    local u = ua()
    u:on("INVITE", function(call)
      got[#got + 1] = call
      assert(call:answer())
      call:wait()
    end)
    return u
  end

  -- a call to the receptionist that lets itself be transferred when
  -- `allow` (a refer hook from the start: a blind REFER comes at once)
  local function call_reception(port, allow)
    return assert(ua():invite("sip:reception@127.0.0.1:" .. port, { timeout = 10,
      on_call = allow and function(c) c:on("refer", function() return true end) end or nil }))
  end

  it("attended: the caller ends up with the target, in a call that replaced the consultation", function()
    local b = {}
    local ub = target(b)
    local proc, port = start("transfer.lua", { ub:uri("bob"), "-n", "1" }, "transfer")
    helper.run(function()
      local a = call_reception(port, true)
      -- the caller's call to the receptionist ends, transferred
      assert.are.equal("transferred", a:wait(30))
      local new = a.transferred_to
      assert.are.equal("confirmed", new.state)
      -- the target: the consultation call, then the caller's, which replaced it
      assert.are.equal("replaced", b[1]:wait(10))
      assert.are.equal(2, #b)
      assert.are.equal(b[1], b[2].replaces)
      assert.are.equal("confirmed", b[2].state)
      assert.are.equal(new.call_id, b[2].call_id)
      new:hangup()
    end, 60)
    assert.are.equal(0, proc:wait(15), proc.log())
    local log = proc.log()
    assert.matches("call 1: caller on hold, calling " .. ub:uri("bob"), log, 1, true)
    assert.matches("call 1: consultation call ended (bye)", log, 1, true)
    assert.matches("call 1: transferred (200)", log, 1, true)
    assert.matches("call 1: call with the caller ended (bye)", log, 1, true)
  end)

  it("blind (-b): the caller calls the target itself", function()
    local b = {}
    local ub = target(b)
    local proc, port = start("transfer.lua", { ub:uri("bob"), "-b", "-n", "1" }, "transfer")
    helper.run(function()
      local a = call_reception(port, true)
      assert.are.equal("transferred", a:wait(30))
      local new = a.transferred_to
      assert.are.equal("confirmed", new.state)
      assert.are.equal(1, #b)
      assert.is_nil(b[1].replaces)
      assert.are.equal(new.call_id, b[1].call_id)
      -- the target sees who put the call through
      assert.matches("^<sip:reception@", b[1].invite:header("Referred-By"))
      new:hangup()
    end, 60)
    assert.are.equal(0, proc:wait(15), proc.log())
    local log = proc.log()
    assert.matches("call 1: transferring the caller to " .. ub:uri("bob") .. " (blind)", log, 1, true)
    assert.matches("call 1: transferred (200)", log, 1, true)
  end)

  it("says so and hangs up both calls when the caller refuses the transfer", function()
    local b = {}
    local ub = target(b)
    local proc, port = start("transfer.lua", { ub:uri("bob"), "-n", "1" }, "transfer")
    helper.run(function()
      local a = call_reception(port, false)     -- no refer hook: 603
      assert.are.equal("bye", a:wait(30))
      assert.are.equal("bye", b[1]:wait(10))
      assert.are.equal(1, #b)
    end, 60)
    assert.are.equal(0, proc:wait(15), proc.log())
    local log = proc.log()
    assert.matches("call 1: not transferred: 603 Decline", log, 1, true)
    assert.matches("call 1: call with the caller ended (hangup)", log, 1, true)
  end)

  it("transfers SIPp (blind): REFER to the target, its sipfrag NOTIFY, its BYE", function()
    local bob = "sip:bob@127.0.0.1:" .. helper.free_port()    -- SIPp reports; it calls nobody
    local proc, port = start("transfer.lua", { bob, "-b", "-n", "1" }, "transfer")
    local sipp = helper.sipp{ sf = "uac_transferee_blind.xml", port = helper.free_port(),
                              remote = "127.0.0.1:" .. port,
                              args = { "-m", "1", "-s", "reception", "-timeout", "30", "-timeout_error" } }
    assert.are.equal(0, sipp:wait(30), sipp.log())
    assert.are.equal(0, proc:wait(15), proc.log())
    local log = proc.log()
    assert.matches("call 1: transferred (200)", log, 1, true)
    assert.matches("call 1: call with the caller ended (bye)", log, 1, true)
  end)
end)
