--- Call transfer (RFC 3515, RFC 3891, RFC 4488): blind and attended
-- transfers between luasip UAs, SIPp as the transferor and as the
-- transferee, refusals, a failed new call, norefersub, and INVITEs with
-- Replaces that match nothing.
local helper = require "helper"

describe("call transfer", function()
  local ua = helper.uas(after_each)
  after_each(function() helper.stop_all() end)

  -- a UA answering every call; each call lands in got.calls, and
  -- allow(call, refer) (when given) is its refer hook
  local function answering(got, allow)
    local u = ua()
    got.calls = got.calls or {}
    u:on("INVITE", function(call)
      got.calls[#got.calls + 1] = call
      if allow then call:on("refer", allow) end
      if got.busy then return 486 end
      assert(call:answer())
      call:wait()
    end)
    return u
  end

  it("blind: the transferee calls the target, reports it, and ends the old call", function()
    local b, c = {}, {}
    local refer_seen
    local ub = answering(b, function(_, refer) refer_seen = refer; return true end)
    local uc = answering(c)
    helper.run(function()
      local call = assert(ua():invite(ub:uri("bob")))
      local ok, status = call:refer(uc:uri("carol"))
      assert.is_true(ok)
      assert.are.equal(200, status)
      assert.are.equal("bye", call:wait(10))     -- the transferee hung up
      local old = b.calls[1]
      assert.are.equal("transferred", old:wait(10))
      assert.are.equal("confirmed", old.transferred_to.state)
      assert.are.equal(uc:uri("carol"), refer_seen.target)
      -- the target sees who referred the call
      assert.matches("^<sip:", c.calls[1].invite:header("Referred-By"))
      assert.are.equal(refer_seen.referred_by, c.calls[1].invite:header("Referred-By"))
      old.transferred_to:hangup()
    end, 30)
  end)

  it("attended: the new call replaces the one to the target", function()
    local b, c = {}, {}
    local ub = answering(b, function() return true end)
    local uc = answering(c)
    helper.run(function()
      local a = ua()
      local to_b = assert(a:invite(ub:uri("bob")))
      local to_c = assert(a:invite(uc:uri("carol")))
      local ok, status = to_b:refer(to_c)
      assert.is_true(ok)
      assert.are.equal(200, status)
      -- carol's first call (from a) is replaced by the one from bob
      assert.are.equal("bye", to_c:wait(10))
      assert.are.equal("bye", to_b:wait(10))
      assert.are.equal("replaced", c.calls[1]:wait(10))
      assert.are.equal(c.calls[1], c.calls[2].replaces)
      assert.are.equal("confirmed", c.calls[2].state)
      c.calls[2]:hangup()
    end, 30)
  end)

  it("reports the refusal: no refer hook is 603, a failed new call its status", function()
    local b, c = {}, { busy = true }
    local ub = answering(b)                        -- no hook
    local ub2 = answering(b, function() return true end)
    local uc = answering(c)
    helper.run(function()
      local call = assert(ua():invite(ub:uri("bob")))
      local ok, err, res = call:refer(uc:uri("carol"))
      assert.is_nil(ok)
      assert.are.equal("603 Decline", err)
      assert.are.equal(603, res.status)
      assert.are.equal("confirmed", call.state)    -- nothing else changed
      call:hangup()
      call = assert(ua():invite(ub2:uri("bob")))
      ok, err = call:refer(uc:uri("carol"))
      assert.is_nil(ok)
      assert.are.equal("486 Busy Here", err)
      assert.are.equal("confirmed", call.state)    -- the transferee kept it
      call:hangup()
    end, 30)
  end)

  it("norefersub: 202 and no NOTIFY when both agree", function()
    local b, c = {}, {}
    local ub = answering(b, function() return true end)
    local uc = answering(c)
    helper.run(function()
      local call = assert(ua():invite(ub:uri("bob")))
      local ok, status = call:refer(uc:uri("carol"), { norefersub = true })
      assert.is_true(ok)
      assert.are.equal(202, status)
      assert.are.equal("bye", call:wait(10))
      b.calls[1].transferred_to:hangup()
    end, 30)
  end)

  it("refuses bad REFERs and an INVITE whose Replaces matches nothing", function()
    local b = {}
    local ub = answering(b, function() return true end)
    helper.run(function()
      local a = ua()
      local call = assert(a:invite(ub:uri("bob")))
      local res = assert(call:request("REFER", { headers = { ["Refer-To"] = "<tel:+15551234>" } }))
      assert.are.equal(400, res.status)
      res = assert(call:request("REFER", { headers = {
        ["Refer-To"] = "<sip:carol@127.0.0.1?Subject=hi>" } }))
      assert.are.equal(400, res.status)
      assert.matches("other than Replaces", res.reason)
      res = assert(call:request("REFER"))
      assert.are.equal(400, res.status)
      call:hangup()
      local new, err = a:invite(ub:uri("bob"), { headers = {
        Replaces = "nosuchcall@x;to-tag=a;from-tag=b", Require = "replaces" } })
      assert.is_nil(new)
      assert.matches("^481", err)
      new, err = a:invite(ub:uri("bob"), { headers = { Require = "foo" } })
      assert.is_nil(new)
      assert.matches("^420", err)
    end, 30)
  end)

  it("raises on a wrong argument, naming the function and the option", function()
    local b = {}
    local ub = answering(b)
    helper.run(function()
      local call = assert(ua():invite(ub:uri("bob")))
      helper.raises("call:refer.*SIP URI", function() call:refer(42) end)
      helper.raises("call:refer.*SIP URI", function() call:refer("sip:x@y\r\nX: 1") end)
      helper.raises("call:refer.*bogus", function() call:refer("sip:x@127.0.0.1", { bogus = 1 }) end)
      helper.raises("call:refer.*itself", function() call:refer(call) end)
      call:hangup()
    end, 30)
  end)

  it("is transferred by SIPp: 202, sipfrag NOTIFYs, BYE", function()
    local b, c = {}, {}
    local ub = answering(b, function() return true end)
    local uc = answering(c)
    local sipp = helper.sipp{ sf = "uac_refer.xml", port = helper.free_port(),
                              args = { "-m", "1", "-s", "bob", "-key", "target", uc:uri("carol") },
                              remote = ub:address():match(":(.*)$") }
    assert.are.equal(0, sipp:wait(30), sipp.log())
    helper.run(function()
      assert.are.equal("transferred", b.calls[1]:wait(10))
      assert.are.equal("confirmed", c.calls[1].state)
      c.calls[1]:hangup()
    end, 20)
  end)

  it("transfers SIPp: its 202 and sipfrag NOTIFYs end call:refer", function()
    local port = helper.free_port()
    local sipp = helper.sipp{ sf = "uas_refer.xml", port = port, args = { "-m", "1" } }
    helper.run(function()
      local call = assert(ua():invite("sip:bob@127.0.0.1:" .. port))
      local ok, status = call:refer("sip:carol@example.com")
      assert.is_true(ok)
      assert.are.equal(200, status)
      assert.are.equal("bye", call:wait(10))
    end, 30)
    assert.are.equal(0, sipp:wait(15), sipp.log())
  end)
end)
