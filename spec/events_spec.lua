local sip = require "sip"
local helper = require "helper"

describe("ua:events()", function()
  local a, b
  before_each(function()
    a = assert(sip.ua{ t1 = 0.05, t4 = 0.05 })
    b = assert(sip.ua{ t1 = 0.05, t4 = 0.05 })
  end)
  after_each(function()
    a:close()
    b:close()
  end)

  it("hands requests and calls to one loop that answers them", function()
    local seen, res, call_ok = {}, nil, nil
    helper.run(function()
      sip.spawn(function()
        res = b:request("MESSAGE", a:uri(), { body = "hi" })
        local call = b:invite(a:uri(), { sdp = sip.sdp.offer{ addr = "127.0.0.1" } })
        call_ok = call and call:hangup()
      end)
      for ev in a:events(2) do
        seen[#seen + 1] = ev.type
        if ev.type == "request" then
          assert.are.equal("MESSAGE", ev.method)
          assert.are.equal("hi", ev.request.body)
          ev.request:reply(202)
        elseif ev.type == "call_invite" then
          assert.is_true(ev.call:answer())
          assert.are.equal("bye", ev.call:wait(2))
          break
        end
      end
      -- the caller's hangup ends when the BYE's 200 is back
      while call_ok == nil do sip.sleep(0.01) end
    end, 10)
    assert.are.same({ "request", "call_invite" }, seen)
    assert.are.equal(202, res.status)
    assert.is_true(call_ok)
  end)

  it("ends when the UA closes or after the timeout", function()
    helper.run(function()
      local t0 = sip.now()
      for _ in a:events(0.2) do error("no event expected") end
      assert.is_true(sip.now() - t0 >= 0.19)
      sip.spawn(function() sip.sleep(0.1); a:close() end)
      t0 = sip.now()
      for _ in a:events() do error("no event expected") end
      assert.is_true(sip.now() - t0 < 1)
    end, 5)
  end)
end)
