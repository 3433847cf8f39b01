--- A pending wait keeps the process up (issue: "a UAC script exits in the
-- middle of a call set-up"). Each script runs under bin/luasip with
-- nothing else to keep the loop alive: no handler, no sleep, no timeout.
-- The peer (SIPp) answers with 100 and sends its final response two
-- seconds later, when the client transaction has no timer running.
local helper = require "helper"

local luasip = helper.root .. "/bin/luasip"

local function script(text)
  local path = helper.tmp .. "/liveness-" .. math.random(1, 1e9) .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- runs bin/luasip to its end (the spec's own loop is idle meanwhile)
local function run(path, ...)
  -- bounded: a script that never ends fails the spec instead of hanging it
  local cmd = "timeout 60 " .. helper.shell_quote(luasip) .. " " .. helper.shell_quote(path)
  for _, a in ipairs{ ... } do cmd = cmd .. " " .. helper.shell_quote(a) end
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  return tonumber(out:match("rc=(%d+)\n?$")), out
end

local function with_sipp(sf, body, check)
  local port = helper.free_port()
  local sipp = helper.sipp{ sf = sf, port = port, args = { "-m", "1" } }
  local path = script(body)
  finally(function()
    helper.stop_all()
    os.remove(path)
  end)
  local rc, out = run(path, "sip:service@127.0.0.1:" .. port)
  assert.are.equal(0, rc, out)
  check(out)
  -- SIPp ends 0 only after it got every ACK and BYE it expects
  assert.are.equal(0, sipp:wait(20), sipp.log())
end

describe("a pending wait keeps the process alive", function()
  after_each(helper.stop_all)

  it("ua:invite without timeout waits through a 100 for the 200, ACKs and hangs up", function()
    with_sipp("uas_100_then_200.xml", [[
local sip = require "sip"
local ua = assert(sip.ua())
local call, err = ua:invite(..., { sdp = sip.sdp.offer{ addr = "127.0.0.1", port = 4000 } })
print("invite: " .. (call and call.state or err))
assert(call:hangup())
print("hung up")
]], function(out)
      assert.matches("invite: confirmed", out)
      assert.matches("hung up", out)
    end)
  end)

  it("call:hold() waits through a 100 for the re-INVITE's 200", function()
    with_sipp("uas_reinvite_100_then_200.xml", [[
local sip = require "sip"
local ua = assert(sip.ua())
local call = assert(ua:invite(..., { sdp = sip.sdp.offer{ addr = "127.0.0.1", port = 4000 },
                                     timeout = 10 }))
local res, err = call:hold()
print("hold: " .. (res and res.status or err))
assert(call:hangup())
]], function(out)
      assert.matches("hold: 200", out)
    end)
  end)

  it("ua:request without timeout waits through a 100 for the 200", function()
    with_sipp("uas_nict_100_then_200.xml", [[
local sip = require "sip"
local ua = assert(sip.ua())
local res, err = ua:request("MESSAGE", ..., { body = "hi" })
print("message: " .. (res and res.status or err))
]], function(out)
      assert.matches("message: 200", out)
    end)
  end)

  it("ua:register waits through a 100 for the 200", function()
    with_sipp("uas_register_100_then_200.xml", [[
local sip = require "sip"
local ua = assert(sip.ua())
local reg, err = ua:register{ registrar = ..., aor = "sip:alice@127.0.0.1" }
print("register: " .. (reg and reg.state or err))
assert(reg:unregister())   -- a registration is refreshed until removed
]], function(out)
      assert.matches("register: registered", out)
    end)
  end)

  it("call:wait() on an answered call keeps the script up until the peer's BYE", function()
    with_sipp("uas_answer_then_bye.xml", [[
local sip = require "sip"
local ua = assert(sip.ua())
local call = assert(ua:invite(..., { timeout = 10 }))
print("ended: " .. call:wait())
]], function(out)
      assert.matches("ended: bye", out)
    end)
  end)
end)

describe("the runner's exit", function()
  after_each(helper.stop_all)

  it("ACKs the 487 of an INVITE it CANCELled just before the script ended", function()
    with_sipp("uas_ring_cancel.xml", [[
local sip = require "sip"
local ua = assert(sip.ua())
local call, err = ua:invite(..., { timeout = 1 })
print("invite: " .. tostring(call) .. " " .. tostring(err))
]], function(out)
      assert.matches("invite: nil timeout", out)
    end)
  end)
end)
